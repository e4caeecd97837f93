# hpn-importer and hpn-producer from binaries built on this machine, on the
# local Debian base: the image of deploy/Dockerfile without its build stage,
# for machines that reach no registry (scripts/containers builds it).
ARG BASE=hpn-local/debian:bookworm
FROM ${BASE}
COPY hpn-producer hpn-importer /usr/local/bin/
USER nobody
ENTRYPOINT ["hpn-importer"]
CMD ["serve", "--listen", "0.0.0.0:9464"]
EXPOSE 9464
