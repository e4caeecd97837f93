#!/bin/sh
# Set the Erlang cookie from RABBITMQ_ERLANG_COOKIE (the nodes of a cluster
# must share it), then run the server in the foreground as its own user.
set -e
if [ -n "${RABBITMQ_ERLANG_COOKIE:-}" ]; then
  printf '%s' "$RABBITMQ_ERLANG_COOKIE" > /var/lib/rabbitmq/.erlang.cookie
  chmod 400 /var/lib/rabbitmq/.erlang.cookie
  unset RABBITMQ_ERLANG_COOKIE
fi
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
exec rabbitmq-server
