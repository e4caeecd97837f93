//! hpn-testkit: the HP Norton stack in containers, for test suites.
//!
//! One call starts RabbitMQ and a MongoDB server in containers (and, if
//! asked, `hpn-importer serve` beside them), waits until each answers, and
//! hands back their addresses; dropping the [`Stack`] removes every
//! container and the network it made. Another team's tests publish to
//! [`Stack::amqp_url`] and read [`Stack::mongodb_uri`] as they would in
//! production:
//!
//! ```no_run
//! # async fn example() -> Result<(), hpn_testkit::KitError> {
//! let stack = hpn_testkit::Stack::builder().with_importer().start().await?;
//! println!("{} {} {:?}", stack.amqp_url(), stack.mongodb_uri(), stack.importer_listen());
//! # Ok(()) }
//! ```
//!
//! Images ([`Images::from_env`]) default to the official ones
//! (`rabbitmq:4-management`, `mongo:8.0`) and to `hpnorton:latest` for
//! the importer (`docker build -f deploy/Dockerfile -t hpnorton .`); the
//! variables `HPN_TEST_RABBITMQ_IMAGE`, `HPN_TEST_MONGODB_IMAGE` and
//! `HPN_TEST_IMPORTER_IMAGE` name others. A machine that reaches no
//! registry builds local ones with `scripts/containers images` and sets the
//! variables with `eval "$(scripts/containers env)"`. An image that is
//! missing is pulled (by testcontainers); where that cannot work, the error
//! says which image and how to build it.
//!
//! Readiness is checked the way a client sees it, whatever the image: an
//! AMQP connection that opens, a MongoDB `ping` that answers, an importer
//! `/healthz` that says 200. RabbitMQ gets a fixed host port for the life of
//! the stack, so [`Stack::kill_rabbitmq`] and [`Stack::start_rabbitmq`] (a
//! broker crash, for fault tests) keep its address.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// The variable naming the RabbitMQ image.
pub const RABBITMQ_IMAGE: &str = "HPN_TEST_RABBITMQ_IMAGE";
/// The variable naming the MongoDB image.
pub const MONGODB_IMAGE: &str = "HPN_TEST_MONGODB_IMAGE";
/// The variable naming the importer image.
pub const IMPORTER_IMAGE: &str = "HPN_TEST_IMPORTER_IMAGE";

/// How long each server may take to answer after its container starts.
const READY_WITHIN: Duration = Duration::from_secs(90);

/// Why the stack could not be started or changed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error(
        "cannot start the {what} container from image {image}: {source}. Is a container engine running \
         (docker.io with dockerd), and is the image here or pullable? On a machine with no registry: \
         scripts/containers images, then eval \"$(scripts/containers env)\""
    )]
    Start {
        what: &'static str,
        image: String,
        source: Box<testcontainers::TestcontainersError>,
    },
    #[error("the {what} container: {source}")]
    Container {
        what: &'static str,
        source: Box<testcontainers::TestcontainersError>,
    },
    #[error("{what} did not answer at {address} within {READY_WITHIN:?}: {last}")]
    NotReady {
        what: &'static str,
        address: String,
        last: String,
    },
    #[error("no free local port: {0}")]
    Port(std::io::Error),
}

impl KitError {
    /// For `map_err`: a container operation on `what` failed.
    fn container(what: &'static str) -> impl FnOnce(testcontainers::TestcontainersError) -> KitError {
        move |source| KitError::Container {
            what,
            source: Box::new(source),
        }
    }
}

/// The images the stack starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub rabbitmq: String,
    pub mongodb: String,
    pub importer: String,
}

impl Images {
    /// The official images, or those the `HPN_TEST_*_IMAGE` variables name.
    pub fn from_env() -> Images {
        let pick = |variable: &str, default: &str| std::env::var(variable).unwrap_or_else(|_| default.to_string());
        Images {
            rabbitmq: pick(RABBITMQ_IMAGE, "rabbitmq:4-management"),
            mongodb: pick(MONGODB_IMAGE, "mongo:8.0"),
            importer: pick(IMPORTER_IMAGE, "hpnorton:latest"),
        }
    }
}

/// `name:tag` as testcontainers takes it (a registry port is not a tag).
fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    }
}

/// What to start; [`Stack::builder`].
#[derive(Clone, Debug)]
pub struct StackBuilder {
    images: Images,
    importer: bool,
    importer_env: Vec<(String, String)>,
}

impl StackBuilder {
    /// Other images than [`Images::from_env`].
    pub fn images(mut self, images: Images) -> Self {
        self.images = images;
        self
    }

    /// Also start `hpn-importer serve`, connected to both servers.
    pub fn with_importer(mut self) -> Self {
        self.importer = true;
        self
    }

    /// A setting for the importer (`HPN_DATABASE`, `HPN_QUEUE_PREFIX`, ...).
    pub fn importer_env(mut self, name: &str, value: &str) -> Self {
        self.importer_env.push((name.to_string(), value.to_string()));
        self
    }

    /// Start the containers and wait until each answers.
    pub async fn start(self) -> Result<Stack, KitError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let network = format!(
            "hpn-kit-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let rabbitmq_name = format!("{network}-rabbitmq");
        let mongodb_name = format!("{network}-mongodb");

        let amqp_port = free_port()?;
        let (name, tag) = split_image(&self.images.rabbitmq);
        let rabbitmq = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::message_on_stdout("Server startup complete"))
            .with_network(&network)
            .with_container_name(&rabbitmq_name)
            .with_hostname("rabbitmq")
            .with_mapped_port(amqp_port, ContainerPort::Tcp(5672))
            .with_startup_timeout(READY_WITHIN)
            .start()
            .await
            .map_err(|source| KitError::Start {
                what: "RabbitMQ",
                image: self.images.rabbitmq.clone(),
                source: Box::new(source),
            })?;
        let amqp_url = format!("amqp://guest:guest@127.0.0.1:{amqp_port}/%2f");
        wait_for_amqp(&amqp_url).await?;

        let (name, tag) = split_image(&self.images.mongodb);
        let mongodb = GenericImage::new(name, tag)
            .with_exposed_port(ContainerPort::Tcp(27017))
            .with_network(&network)
            .with_container_name(&mongodb_name)
            .start()
            .await
            .map_err(|source| KitError::Start {
                what: "MongoDB",
                image: self.images.mongodb.clone(),
                source: Box::new(source),
            })?;
        let mongodb_port = mongodb
            .get_host_port_ipv4(27017)
            .await
            .map_err(KitError::container("MongoDB"))?;
        let mongodb_uri = format!("mongodb://127.0.0.1:{mongodb_port}");
        wait_for_mongodb(&mongodb_uri).await?;

        let mut stack = Stack {
            importer: None,
            importer_listen: None,
            rabbitmq,
            mongodb,
            amqp_url,
            mongodb_uri,
        };
        if self.importer {
            let (name, tag) = split_image(&self.images.importer);
            let mut request = GenericImage::new(name, tag)
                .with_exposed_port(ContainerPort::Tcp(9464))
                .with_network(&network)
                .with_container_name(format!("{network}-importer"))
                .with_env_var("HPN_AMQP_URL", format!("amqp://guest:guest@{rabbitmq_name}:5672/%2f"))
                .with_env_var("HPN_MONGODB_URI", format!("mongodb://{mongodb_name}:27017"))
                .with_cmd(["serve", "--listen", "0.0.0.0:9464"]);
            for (name, value) in &self.importer_env {
                request = request.with_env_var(name, value);
            }
            let importer = request.start().await.map_err(|source| KitError::Start {
                what: "importer",
                image: self.images.importer.clone(),
                source: Box::new(source),
            })?;
            let port = importer
                .get_host_port_ipv4(9464)
                .await
                .map_err(KitError::container("importer"))?;
            let listen = format!("127.0.0.1:{port}");
            wait_for_health(&listen).await?;
            stack.importer = Some(importer);
            stack.importer_listen = Some(listen);
        }
        Ok(stack)
    }
}

/// The running containers; dropping it removes them.
pub struct Stack {
    // Dropped first: the importer holds connections to the others.
    importer: Option<ContainerAsync<GenericImage>>,
    importer_listen: Option<String>,
    rabbitmq: ContainerAsync<GenericImage>,
    mongodb: ContainerAsync<GenericImage>,
    amqp_url: String,
    mongodb_uri: String,
}

impl Stack {
    /// RabbitMQ and MongoDB with [`Images::from_env`].
    pub async fn start() -> Result<Stack, KitError> {
        Stack::builder().start().await
    }

    pub fn builder() -> StackBuilder {
        StackBuilder {
            images: Images::from_env(),
            importer: false,
            importer_env: Vec::new(),
        }
    }

    /// RabbitMQ's address from the host (guest user, default vhost).
    pub fn amqp_url(&self) -> &str {
        &self.amqp_url
    }

    /// MongoDB's address from the host.
    pub fn mongodb_uri(&self) -> &str {
        &self.mongodb_uri
    }

    /// Where the importer's `/healthz` and `/metrics` answer, if one runs.
    pub fn importer_listen(&self) -> Option<&str> {
        self.importer_listen.as_deref()
    }

    /// Kill the RabbitMQ container at once, as a crash would: the broker
    /// goes away under its clients, with no time to close their connections.
    pub async fn kill_rabbitmq(&self) -> Result<(), KitError> {
        self.rabbitmq
            .stop_with_timeout(Some(0))
            .await
            .map_err(KitError::container("RabbitMQ"))
    }

    /// Start it again, at the same address, and wait until it answers.
    pub async fn start_rabbitmq(&self) -> Result<(), KitError> {
        self.rabbitmq.start().await.map_err(KitError::container("RabbitMQ"))?;
        wait_for_amqp(&self.amqp_url).await
    }

    /// The containers' log lines, for a failing test to print.
    pub async fn logs(&self) -> String {
        let mut text = String::new();
        let containers = [
            ("rabbitmq", Some(&self.rabbitmq)),
            ("mongodb", Some(&self.mongodb)),
            ("importer", self.importer.as_ref()),
        ];
        for (name, container) in containers {
            let Some(container) = container else { continue };
            let outputs = [container.stdout_to_vec().await, container.stderr_to_vec().await];
            for bytes in outputs.into_iter().flatten() {
                for line in String::from_utf8_lossy(&bytes).lines() {
                    text.push_str(&format!("{name}: {line}\n"));
                }
            }
        }
        text
    }
}

/// A local port nobody listens on now.
fn free_port() -> Result<u16, KitError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(KitError::Port)?;
    Ok(listener.local_addr().map_err(KitError::Port)?.port())
}

/// Call `attempt` until it succeeds or [`READY_WITHIN`] has passed.
async fn until_ready<F, Fut>(what: &'static str, address: &str, mut attempt: F) -> Result<(), KitError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(last) if Instant::now() >= deadline => {
                return Err(KitError::NotReady {
                    what,
                    address: address.to_string(),
                    last,
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

async fn wait_for_amqp(url: &str) -> Result<(), KitError> {
    until_ready("RabbitMQ", url, || async {
        let connection = hpn_common::broker::connect(url, "hpn-testkit")
            .await
            .map_err(|e| e.to_string())?;
        let _ = connection.close(200, "ready".into()).await;
        Ok(())
    })
    .await
}

async fn wait_for_mongodb(uri: &str) -> Result<(), KitError> {
    until_ready("MongoDB", uri, || async {
        let mut options = mongodb::options::ClientOptions::parse(uri)
            .await
            .map_err(|e| e.to_string())?;
        options.server_selection_timeout = Some(Duration::from_secs(2));
        let client = mongodb::Client::with_options(options).map_err(|e| e.to_string())?;
        client
            .database("admin")
            .run_command(mongodb::bson::doc! {"ping": 1})
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    })
    .await
}

async fn wait_for_health(listen: &str) -> Result<(), KitError> {
    until_ready("the importer", listen, || async {
        match hpn_common::http::fetch(listen, "/healthz").await {
            Some((200, _)) => Ok(()),
            Some((status, body)) => Err(format!("/healthz answered {status}: {body}")),
            None => Err("/healthz did not answer".to_string()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test of this binary that talks to an engine, so setting
    /// DOCKER_HOST for the process disturbs no other.
    #[tokio::test]
    async fn without_an_engine_start_fails_and_says_what_is_missing() {
        std::env::set_var("DOCKER_HOST", "unix:///nonexistent/docker.sock");
        let error = Stack::start().await.err().expect("no engine, no stack");
        let text = error.to_string();
        assert!(
            text.contains("RabbitMQ")
                && text.contains("container engine")
                && text.contains("scripts/containers images"),
            "{text}"
        );
    }

    #[test]
    fn image_names_split_at_the_tag_not_a_registry_port() {
        assert_eq!(
            split_image("rabbitmq:4-management"),
            ("rabbitmq".into(), "4-management".into())
        );
        assert_eq!(
            split_image("hpn-local/secantusd"),
            ("hpn-local/secantusd".into(), "latest".into())
        );
        assert_eq!(
            split_image("registry:5000/team/mongo"),
            ("registry:5000/team/mongo".into(), "latest".into())
        );
        assert_eq!(
            split_image("registry:5000/team/mongo:8.0"),
            ("registry:5000/team/mongo".into(), "8.0".into())
        );
    }
}
