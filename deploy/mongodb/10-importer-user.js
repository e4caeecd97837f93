// Run once by the official mongo image, on first start (an empty data
// volume), after it has made the root user from MONGO_INITDB_ROOT_USERNAME
// and MONGO_INITDB_ROOT_PASSWORD_FILE: the importer's own user, readWrite on
// its database only (docs/security.md). The password is read from the
// secret file, never from the compose file.
const fs = require("fs");
const password = fs.readFileSync(process.env.HPN_IMPORTER_PASSWORD_FILE, "utf8").trim();
db.getSiblingDB("admin").createUser({
  user: process.env.HPN_IMPORTER_USER,
  pwd: password,
  roles: [{ role: "readWrite", db: process.env.HPN_DATABASE }],
});
