# RabbitMQ from Debian's package, for machines that reach no image registry
# (scripts/containers builds it on the local Debian base image). Behaves
# like the official image where the stack relies on it: logs to stdout
# ("Server startup complete"), the guest user may connect from other hosts,
# the management plugin is on, RABBITMQ_ERLANG_COOKIE sets the cluster
# cookie, and files in /etc/rabbitmq/conf.d/ are read.
ARG BASE=hpn-local/debian:trixie
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && rabbitmq-plugins enable --offline rabbitmq_management \
 && mkdir -p /etc/rabbitmq/conf.d \
 && printf 'loopback_users.guest = false\nlisteners.tcp.default = 5672\nmax_message_size = 4194304\n' > /etc/rabbitmq/conf.d/10-defaults.conf
COPY rabbitmq-entrypoint.sh /usr/local/bin/rabbitmq-entrypoint.sh
ENV RABBITMQ_LOGS=- RABBITMQ_CONFIG_FILES=/etc/rabbitmq/conf.d
EXPOSE 5672 15672
ENTRYPOINT ["/usr/local/bin/rabbitmq-entrypoint.sh"]
