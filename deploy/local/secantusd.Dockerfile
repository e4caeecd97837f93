# The MongoDB-compatible server secantusd-rs, for machines that reach no
# image registry (scripts/containers copies in the binary that
# scripts/services installed, and builds this on the local Debian base).
# --standalone: inside a container the server must not advertise a replica
# set, or drivers are sent to the address it binds (0.0.0.0).
ARG BASE=hpn-local/debian:bookworm
FROM ${BASE}
COPY secantusd-rs /usr/local/bin/secantusd-rs
RUN mkdir -p /data/db
VOLUME /data/db
EXPOSE 27017
ENTRYPOINT ["secantusd-rs", "--standalone", "--host", "0.0.0.0", "--port", "27017", "--storage-path", "/data/db", "--cache-size", "512M"]
