"""The users of the local MongoDB-compatible image, made as the official
mongo image makes them (its MONGO_INITDB_ROOT_* variables and our
deploy/mongodb/10-importer-user.js): the root user from
MONGO_INITDB_ROOT_USERNAME and MONGO_INITDB_ROOT_PASSWORD_FILE, through the
localhost exception while the store has no user, then the importer's user
(HPN_IMPORTER_USER, HPN_IMPORTER_PASSWORD_FILE), readWrite on HPN_DATABASE;
over TLS when HPN_USERS_TLS_DIR names the folder of ca.pem and
client-combined.pem. Safe to run on every start: what exists is left as it is."""
import os
import sys

import pymongo
from pymongo.errors import OperationFailure


def secret(variable):
    with open(os.environ[variable]) as f:
        return f.read().strip()


def main():
    root = os.environ.get("MONGO_INITDB_ROOT_USERNAME")
    if not root:
        return
    root_password = secret("MONGO_INITDB_ROOT_PASSWORD_FILE")
    local = "mongodb://127.0.0.1:27017/?directConnection=true&serverSelectionTimeoutMS=30000"
    tls = os.environ.get("HPN_USERS_TLS_DIR")
    if tls:
        local += f"&tls=true&tlsCAFile={tls}/ca.pem&tlsCertificateKeyFile={tls}/client-combined.pem"
    try:
        pymongo.MongoClient(local).admin.command(
            "createUser", root, pwd=root_password, roles=[{"role": "root", "db": "admin"}]
        )
        print(f"made the root user {root}", file=sys.stderr)
    except OperationFailure:
        pass  # the store has users: the localhost exception is closed
    admin = pymongo.MongoClient(local, username=root, password=root_password, authSource="admin").admin
    user = os.environ.get("HPN_IMPORTER_USER")
    if user and not admin.command("usersInfo", user)["users"]:
        admin.command(
            "createUser",
            user,
            pwd=secret("HPN_IMPORTER_PASSWORD_FILE"),
            roles=[{"role": "readWrite", "db": os.environ["HPN_DATABASE"]}],
        )
        print(f"made the user {user}", file=sys.stderr)


if __name__ == "__main__":
    main()
