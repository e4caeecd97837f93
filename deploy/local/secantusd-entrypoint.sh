#!/bin/sh
# The local MongoDB-compatible server. As the official mongo image does,
# authentication is on when MONGO_INITDB_ROOT_USERNAME is set: then the
# users the environment names are made at start (secantusd-users.py).
# The container lives and dies with the server. Arguments are the server's
# own (deploy/docker-compose.local-tls.yml gives its TLS flags); with
# HPN_USERS_TLS_DIR set, the users are made over TLS with that folder's
# ca.pem and client-combined.pem.
set -e
auth=
if [ -n "${MONGO_INITDB_ROOT_USERNAME:-}" ]; then auth=--auth; fi
# --sync-on-commit: j:true acknowledged only once the journal is on disk (off
# by default in secantusd-rs; the importer relies on it, see scripts/services).
secantusd-rs --standalone $auth --sync-on-commit --host 0.0.0.0 --port 27017 --storage-path /data/db --cache-size 512M "$@" &
server=$!
trap 'kill -TERM $server; wait $server' TERM INT
rm -f /tmp/hpn-users-made
if [ -n "$auth" ]; then python3 /usr/local/bin/secantusd-users.py; fi
touch /tmp/hpn-users-made  # the healthcheck's sign that clients may log in
wait $server
