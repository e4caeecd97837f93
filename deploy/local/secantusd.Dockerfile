# The MongoDB-compatible server secantusd-rs, for machines that reach no
# image registry (scripts/containers copies in the binary that
# scripts/services installed, and builds this on the local Debian base).
# --standalone: inside a container the server must not advertise a replica
# set, or drivers are sent to the address it binds (0.0.0.0). --auth, with
# the users made at start from the same variables the official mongo image
# reads (secantusd-users.py, with Debian's python3-pymongo).
ARG BASE=hpn-local/debian:bookworm
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pymongo \
 && rm -rf /var/lib/apt/lists/*
COPY secantusd-rs secantusd-entrypoint.sh secantusd-users.py /usr/local/bin/
RUN mkdir -p /data/db && chmod +x /usr/local/bin/secantusd-entrypoint.sh
VOLUME /data/db
EXPOSE 27017
ENTRYPOINT ["/usr/local/bin/secantusd-entrypoint.sh"]
