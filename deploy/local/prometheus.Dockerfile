# Prometheus from Debian's package, for machines that reach no image registry
# (scripts/containers builds it on the local Debian base): the server only,
# configured by the files the compose stack mounts in /etc/prometheus.
ARG BASE=hpn-local/debian:bookworm
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
EXPOSE 9090
# As the official image: the flags come from the compose file's command.
ENTRYPOINT ["/usr/bin/prometheus"]
