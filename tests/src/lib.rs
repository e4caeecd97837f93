//! Shared helpers for the integration tests, which run against real
//! RabbitMQ and MongoDB servers (`scripts/services start`; addresses from
//! `HPN_AMQP_URL` and `HPN_MONGODB_URI`, with the local defaults).
//!
//! Every test gets its own database and queue prefix from [`TestEnv`], so the
//! tests run in parallel without seeing each other's data. Its database and
//! queues are removed when the test ends, passed or failed: explicitly with
//! [`TestEnv::cleanup`], or when the `TestEnv` is dropped during a panic.

pub mod lost_reply;
pub mod process;
pub mod secure;

use hpn_common::config::env;
use hpn_common::{broker, ConnectionSettings, QueueType, Record, RecordKind};
use hpn_importer::Store;
use lapin::{Channel, Connection};
use mongodb::bson::{doc, Document};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One test's private corner of the servers, and a scratch directory.
pub struct TestEnv {
    pub settings: ConnectionSettings,
    pub dir: tempfile::TempDir,
    cleaned: bool,
}

impl TestEnv {
    /// A fresh database and queue prefix named after the test.
    pub fn new(test: &str) -> TestEnv {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("hpn_t_{}_{}_{n}", test, std::process::id());
        let mut settings = ConnectionSettings::from_env().expect("the HPN_* settings of the test run");
        settings.database = name.clone();
        settings.queue_prefix = name;
        TestEnv {
            settings,
            dir: tempfile::tempdir().expect("temp dir"),
            cleaned: false,
        }
    }

    /// The same, on the local 3-node cluster (`scripts/services cluster
    /// start`) with quorum queues: its addresses from
    /// `HPN_CLUSTER_AMQP_URL`, or else as the services script lists them.
    pub fn on_cluster(test: &str) -> TestEnv {
        let mut env = TestEnv::new(test);
        env.settings.amqp_url = cluster_urls();
        env.settings.queue_type = QueueType::Quorum;
        env
    }

    /// An importer configuration on the test's servers, database and
    /// queues, with the default tuning.
    pub fn config(&self) -> hpn_importer::Config {
        hpn_importer::Config {
            connection: self.settings.clone(),
            tuning: Default::default(),
            rentals_take_stock: false,
        }
    }

    /// [`TestEnv::config`] with `consumers` consumers and `writers` writers
    /// that all take part, however small the test's queue: a one-shot run
    /// sizes both down to its backlog (one consumer when one can hold the
    /// whole backlog in hand, one writer per batch of it), so the prefetch
    /// here is one message and a batch `batch` records. The racing tests
    /// use this: several consumers and writers on the same keys.
    pub fn racing_config(&self, consumers: usize, writers: usize, batch: usize) -> hpn_importer::Config {
        let mut config = self.config();
        config.tuning.consumers = consumers;
        config.tuning.writers = writers;
        config.tuning.prefetch = 1;
        config.tuning.batch_size = batch;
        config
    }

    /// The same, on the servers of a container [`hpn_testkit::Stack`].
    pub fn on_stack(test: &str, stack: &hpn_testkit::Stack) -> TestEnv {
        let mut env = TestEnv::new(test);
        env.settings.amqp_url = stack.amqp_url().to_string();
        env.settings.mongodb_uri = stack.mongodb_uri().to_string();
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn store(&self) -> Store {
        Store::connect_to(&self.settings)
            .await
            .expect("MongoDB answers (run scripts/services start)")
    }

    /// A store whose every command, as the driver sends it (command
    /// monitoring sees each one whole), is kept as `keep` makes it.
    pub async fn monitored_store<T: Send + 'static>(
        &self,
        keep: impl Fn(&mongodb::event::command::CommandStartedEvent) -> T + Send + Sync + 'static,
    ) -> (Store, std::sync::Arc<std::sync::Mutex<Vec<T>>>) {
        use mongodb::event::command::CommandEvent;
        let sent: std::sync::Arc<std::sync::Mutex<Vec<T>>> = Default::default();
        let mut options = mongodb::options::ClientOptions::parse(&self.settings.mongodb_uri)
            .await
            .expect("a MongoDB connection string");
        let seen = sent.clone();
        options.command_event_handler = Some(mongodb::event::EventHandler::callback(move |event: CommandEvent| {
            if let CommandEvent::Started(started) = event {
                seen.lock().expect("not poisoned").push(keep(&started));
            }
        }));
        let store = Store::connect_with(options, &self.settings.database)
            .await
            .expect("MongoDB answers (run scripts/services start)");
        (store, sent)
    }

    /// A broker connection with the topology declared.
    pub async fn channel(&self) -> (Connection, Channel) {
        let connection = broker::connect(&self.settings.amqp_url, "hpn-tests")
            .await
            .expect("RabbitMQ answers (run scripts/services start)");
        self.settings
            .topology()
            .declare(&connection)
            .await
            .expect("declare topology");
        let channel = connection.create_channel().await.expect("channel");
        (connection, channel)
    }

    /// Messages ready in a queue.
    pub async fn ready(&self, queue: &str) -> u32 {
        let (_connection, channel) = self.channel().await;
        self.settings
            .topology()
            .ready_count(&channel, queue)
            .await
            .expect("queue exists")
    }

    /// Drop the test's database and delete its queues and exchanges.
    pub async fn cleanup(mut self) {
        remove(&self.settings).await;
        self.cleaned = true;
    }
}

impl Drop for TestEnv {
    /// A test that panicked never reached [`TestEnv::cleanup`]: remove its
    /// database and queues here, on a thread of its own (the test's runtime
    /// may be the one unwinding).
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let settings = self.settings.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(remove(&settings));
            }
        })
        .join();
    }
}

async fn remove(settings: &ConnectionSettings) {
    if let Ok(store) = Store::connect_to(settings).await {
        let _ = store.database().drop().await;
        store.shutdown().await;
    }
    if let Ok(connection) = broker::connect(&settings.amqp_url, "hpn-tests-cleanup").await {
        if let Ok(channel) = connection.create_channel().await {
            let _ = settings.topology().delete(&channel).await;
        }
        let _ = connection.close(200, "done".into()).await;
    }
}

/// The `user_id` of every customer in the store, in key order.
pub async fn customer_ids(store: &Store) -> Vec<String> {
    documents(store, RecordKind::Customer)
        .await
        .iter()
        .map(|d| d.get_str("user_id").expect("user_id").to_string())
        .collect()
}

/// Publish one message as an upstream system would: to the records
/// exchange with the kind's routing key, and wait for the broker's confirm.
pub async fn publish_raw(
    channel: &Channel,
    topology: &hpn_common::Topology,
    kind: RecordKind,
    body: &[u8],
    properties: lapin::BasicProperties,
) {
    channel
        .basic_publish(
            topology.exchange().as_str().into(),
            topology.routing_key(kind).into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

/// Make the store refuse customers our validation takes: a 2dsphere index
/// on `extra.location`, which refuses a location that is no geometry
/// (MongoDB's code 16755). Its name, for dropping it: [`GEO_INDEX`].
pub async fn refuse_customers_from_nowhere(store: &Store) {
    let geo = mongodb::IndexModel::builder()
        .keys(doc! {"extra.location": "2dsphere"})
        .build();
    store.collection(RecordKind::Customer).create_index(geo).await.unwrap();
}

pub const GEO_INDEX: &str = "extra.location_2dsphere";

/// A customer `id`, valid to us, located "nowhere" (see
/// [`refuse_customers_from_nowhere`]), as a message body.
pub fn customer_from_nowhere(id: &str) -> String {
    format!(
        r#"{{"user_id":"{id}","name":"N","address":"1 Main St","phone_number":"555","email":"{id}@example.com","extra":{{"location":"nowhere"}}}}"#
    )
}

/// Take the oldest message of a dead-letter queue: the reason the importer
/// wrote on it (`x-hpn-error`), and the message.
pub async fn next_dead_letter(channel: &Channel, queue: &str) -> Option<(String, lapin::message::Delivery)> {
    let message = channel
        .basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")?;
    let reason = hpn_common::message::header_str(&message.delivery.properties, hpn_common::message::header::ERROR)
        .expect("a reason header");
    Some((reason, message.delivery))
}

/// The cluster's comma-separated AMQP addresses.
pub fn cluster_urls() -> String {
    if let Ok(urls) = std::env::var(env::CLUSTER_AMQP_URL) {
        return urls;
    }
    process::services_said(&["cluster", "urls"])
}

/// Every document of a kind, without `_id` and its version (`_v`), sorted by
/// business key: what a test compares against the source rows. Each
/// document's `_id` is checked to be its business key on the way.
pub async fn documents(store: &Store, kind: RecordKind) -> Vec<Document> {
    find_sorted(store, kind, doc! {hpn_importer::document::VERSION_FIELD: 0}).await
}

/// Every document of a kind with its stored version (`None`: written
/// without one), sorted by business key, `_id` checked and removed.
pub async fn versions(store: &Store, kind: RecordKind) -> Vec<(Document, Option<i64>)> {
    find_sorted(store, kind, doc! {})
        .await
        .into_iter()
        .map(|mut d| {
            let version = d.remove(hpn_importer::document::VERSION_FIELD).and_then(|v| v.as_i64());
            (d, version)
        })
        .collect()
}

async fn find_sorted(store: &Store, kind: RecordKind, projection: Document) -> Vec<Document> {
    use futures::TryStreamExt;
    let documents: Vec<Document> = store
        .collection(kind)
        .find(doc! {})
        .projection(projection)
        .sort(doc! {"_id": 1})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read documents");
    documents
        .into_iter()
        .map(|mut d| {
            let id = d.remove("_id");
            assert_eq!(
                id,
                hpn_importer::document::key_of(kind, &d),
                "the _id is the business key"
            );
            d
        })
        .collect()
}

/// The documents a set of records should leave in the store, in the same order.
pub fn expected_documents(kind: RecordKind, records: &[Record]) -> Vec<Document> {
    let mut docs: Vec<(String, Document)> = records
        .iter()
        .filter(|r| r.kind() == kind)
        .map(|r| (sort_key(r), hpn_importer::document::to_document(r)))
        .collect();
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    docs.dedup_by(|a, b| a.0 == b.0);
    docs.into_iter().map(|(_, d)| d).collect()
}

fn sort_key(record: &Record) -> String {
    // Same order as sorting by the key fields in MongoDB (all are strings).
    record.to_fields()[..record.kind().key_fields().len()].join("\u{0}")
}

/// A valid customer, for tests that need one (email `{id}@example.com`).
pub fn customer(id: &str, name: &str) -> Record {
    Record::Customer(hpn_common::Customer {
        user_id: id.into(),
        name: name.into(),
        address: format!("{id} Main St"),
        zip_code: Some("98101".into()),
        phone_number: "206-555-0100".into(),
        email: format!("{id}@example.com"),
        extra: Default::default(),
        version: None,
    })
}

/// A valid product with `quantity` in stock.
pub fn product(id: &str, quantity: u32) -> Record {
    Record::Product(hpn_common::Product {
        product_id: id.into(),
        description: format!("product {id}"),
        product_type: "livingroom".into(),
        quantity_available: quantity,
        extra: Default::default(),
        version: None,
    })
}

/// A rental of product `p` by customer `u`.
pub fn rental(p: &str, u: &str) -> Record {
    Record::Rental(hpn_common::Rental::new(p, u))
}

/// Every valid record in a CSV file.
pub fn read_csv(path: &Path) -> Vec<Record> {
    hpn_common::csv_source::CsvSource::open(path)
        .expect("readable CSV")
        .filter_map(Result::ok)
        .map(|row| row.record)
        .collect()
}
