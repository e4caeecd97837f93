//! The secured pair of servers the security tests run against
//! (`scripts/services secure start`): RabbitMQ with TLS only, on 5671, and
//! the MongoDB-compatible server with `--auth` and TLS, on 27018, both
//! requiring client certificates from a private CA, with no default users.
//! The CA, the certificates and the administrators' passwords are in the
//! services folder (`.services/secure`); the tests make their own users,
//! each with only what its role needs (docs/security.md).

use hpn_common::ConnectionSettings;
use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const AMQP_PORT: u16 = 5671;
pub const MONGODB_PORT: u16 = 27018;

/// Where the secured servers' certificates and passwords are.
pub struct Secured {
    pub dir: PathBuf,
}

/// Which certificates a client presents and trusts.
#[derive(Clone, Copy)]
pub struct Tls<'a> {
    /// The CA file it trusts the server's certificate by.
    pub ca: &'a Path,
    /// Whether it presents the client certificate.
    pub client_cert: bool,
}

impl Secured {
    pub fn new() -> Secured {
        let dir = std::env::var_os("HPN_SERVICES_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.services"))
            .join("secure");
        assert!(
            dir.join("tls/ca.pem").exists(),
            "no secured servers: run scripts/services secure start ({} is missing)",
            dir.join("tls/ca.pem").display()
        );
        Secured { dir }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join("tls").join(name)
    }

    /// The private CA both servers' certificates are signed by.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// Trust the private CA and present the client certificate.
    pub fn mutual<'a>(&self, ca: &'a Path) -> Tls<'a> {
        Tls { ca, client_cert: true }
    }

    fn password(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.password")))
            .unwrap_or_else(|e| panic!("{name}.password: {e}"))
            .trim()
            .to_string()
    }

    /// An `amqps://` URL to the secured broker as `user`.
    pub fn amqp_url(&self, user: &str, password: &str, tls: Tls<'_>) -> String {
        let mut url = format!(
            "amqps://{user}:{password}@localhost:{AMQP_PORT}/%2f?cacertfile={}",
            tls.ca.display()
        );
        if tls.client_cert {
            url += &format!(
                "&certfile={}&keyfile={}",
                self.file("client.pem").display(),
                self.file("client.key").display()
            );
        }
        url
    }

    /// A connection string to the secured store as `user` (none: the
    /// localhost exception, before any user exists).
    pub fn mongodb_uri(&self, user: Option<(&str, &str)>, tls: Tls<'_>) -> String {
        let credentials = user.map(|(u, p)| format!("{u}:{p}@")).unwrap_or_default();
        let mut uri = format!(
            "mongodb://{credentials}localhost:{MONGODB_PORT}/?directConnection=true&serverSelectionTimeoutMS=5000\
             &tls=true&tlsCAFile={}",
            tls.ca.display()
        );
        if tls.client_cert {
            uri += &format!("&tlsCertificateKeyFile={}", self.file("client-combined.pem").display());
        }
        if user.is_some() {
            uri += "&authSource=admin";
        }
        uri
    }

    /// Settings for the broker's administrator and the store's, for a
    /// test's own prefix and database (their setup and cleanup).
    pub async fn admin_settings(&self, prefix: &str) -> ConnectionSettings {
        let ca = self.ca();
        let tls = self.mutual(&ca);
        let mongo_admin = self.mongo_admin().await;
        ConnectionSettings {
            amqp_url: self.amqp_url("hpn_admin", &self.password("rabbitmq-admin"), tls),
            mongodb_uri: self.mongodb_uri(Some(("hpn_admin", &mongo_admin)), tls),
            database: prefix.to_string(),
            queue_prefix: prefix.to_string(),
            queue_type: hpn_common::QueueType::Classic,
        }
    }

    /// The store administrator's password, making the administrator first
    /// when the store has no user yet (through the localhost exception,
    /// as an operator does once).
    async fn mongo_admin(&self) -> String {
        let password = self.password("mongodb-admin");
        let ca = self.ca();
        let anonymous = client(&self.mongodb_uri(None, self.mutual(&ca))).await;
        let made = anonymous
            .database("admin")
            .run_command(doc! {"createUser": "hpn_admin", "pwd": &password, "roles": [{"role": "root", "db": "admin"}]})
            .await;
        if let Err(e) = made {
            // Made by an earlier test: the exception is closed now.
            let text = e.to_string();
            assert!(
                text.contains("already exists")
                    || text.contains("requires authentication")
                    || text.contains("not authorized"),
                "making the store's administrator: {text}"
            );
        }
        password
    }

    /// A store user with `roles` (as `{role, db}` documents).
    pub async fn mongo_user(&self, name: &str, password: &str, roles: Vec<Document>) {
        let ca = self.ca();
        let admin = client(&self.mongodb_uri(Some(("hpn_admin", &self.mongo_admin().await)), self.mutual(&ca))).await;
        let admin = admin.database("admin");
        let _ = admin.run_command(doc! {"dropUser": name}).await;
        admin
            .run_command(doc! {"createUser": name, "pwd": password, "roles": roles})
            .await
            .unwrap_or_else(|e| panic!("createUser {name}: {e}"));
    }

    /// A broker user with these configure, write and read patterns on `/`.
    pub fn rabbit_user(&self, name: &str, password: &str, configure: &str, write: &str, read: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services");
        let status = Command::new(script)
            .args(["secure", "user", name, password, configure, write, read])
            .status()
            .expect("run scripts/services");
        assert!(status.success(), "scripts/services secure user {name}");
    }
}

impl Default for Secured {
    fn default() -> Self {
        Secured::new()
    }
}

async fn client(uri: &str) -> mongodb::Client {
    let options = ClientOptions::parse(uri).await.unwrap_or_else(|e| panic!("{e}"));
    mongodb::Client::with_options(options).expect("a client")
}

/// A CA of its own and nothing signed by it: what a client trusts when it
/// was given the wrong CA file.
pub fn unknown_ca(dir: &Path) -> PathBuf {
    let (key, ca) = (dir.join("other-ca.key"), dir.join("other-ca.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=another CA",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&ca)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl made a CA");
    ca
}
