# hpn-importer and hpn-producer from binaries built on this machine, on the
# local Debian base: the image of deploy/Dockerfile without its build stage,
# for machines that reach no registry (scripts/containers builds it).
# ca-certificates as there: the TLS client loads the system's roots (and
# fails without any) before it adds the private CA of an amqps:// address.
ARG BASE=hpn-local/debian:bookworm
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY hpn-producer hpn-importer /usr/local/bin/
# The producer's version clock lives here (a volume in the compose stack).
RUN mkdir -p /var/lib/hpnorton && chown nobody:nogroup /var/lib/hpnorton
USER nobody
ENTRYPOINT ["hpn-importer"]
CMD ["serve", "--listen", "0.0.0.0:9464"]
EXPOSE 9464
