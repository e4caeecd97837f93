//! Child processes: the importer as a running service, and the services
//! script that stops and starts servers under it, and an import served by
//! such an importer ([`ServedImport`]) for the tests that take a server away
//! in the middle of one.

use crate::{documents, expected_documents, read_csv, TestEnv};
use hpn_common::{ConnectionSettings, RecordKind};
use hpn_producer::{publish_files, PublishOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The importer program: `hpn-importer`'s `main`, built by this crate as
/// `hpn-tests-importer` (see `program`).
pub fn importer_program() -> PathBuf {
    program("hpn-tests-importer")
}

/// The producer program: `hpn-producer`'s `main`, built by this crate as
/// `hpn-tests-producer` (see `program`).
pub fn producer_program() -> PathBuf {
    program("hpn-tests-producer")
}

/// A binary of this crate. Cargo names binaries only to integration tests
/// at compile time, so this finds it where Cargo puts it: in the target
/// folder, beside the `deps/` folder that holds the test executables.
fn program(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let folder = test.parent().and_then(Path::parent).expect("target folder");
    let program = folder.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(program.exists(), "{} is built with the tests", program.display());
    program
}

/// What a finished child process said.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Its stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Run `program` with `args` against the test's servers, to the end.
pub fn run(env: &TestEnv, program: &Path, args: &[&str]) -> Ran {
    run_with(&env.settings, program, args, &[("RUST_LOG", "warn")])
}

/// Run `program` with `args` against `settings`, with `vars` set too, to the end.
pub fn run_with(settings: &ConnectionSettings, program: &Path, args: &[&str], vars: &[(&str, &str)]) -> Ran {
    let output = Command::new(program)
        .args(args)
        .envs(settings.env_vars())
        .envs(vars.iter().copied())
        .output()
        .expect("run the program");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A running `hpn-importer serve`, listening where it says it does.
pub struct Importer {
    pub child: Child,
    /// Where its `/healthz` and `/metrics` answer.
    pub listen: String,
    /// Kept open: the importer may write to it until it exits.
    _stdout: BufReader<ChildStdout>,
}

impl Importer {
    /// `serve` with `flags`, on a port it picks and reports on stdout (no
    /// port is freed by the test and hoped for).
    pub fn start(env: &TestEnv, flags: &[&str]) -> Importer {
        Importer::spawn(&env.settings, flags, Stdio::inherit())
    }

    /// The same, with its log (stderr) going to `log`.
    pub fn start_logged(env: &TestEnv, flags: &[&str], log: &Path) -> Importer {
        Importer::start_on(&env.settings, flags, log)
    }

    /// `serve` with `flags` against `settings` (a test's, with its broker
    /// addresses in another order, say), its log going to `log`.
    pub fn start_on(settings: &ConnectionSettings, flags: &[&str], log: &Path) -> Importer {
        let file = std::fs::File::create(log).expect("create the log file");
        Importer::spawn(settings, flags, Stdio::from(file))
    }

    fn spawn(settings: &ConnectionSettings, flags: &[&str], stderr: Stdio) -> Importer {
        let mut child = Command::new(importer_program())
            .args(["serve", "--flush-ms", "10", "--listen", "127.0.0.1:0"])
            .args(flags)
            .envs(settings.env_vars())
            .env("RUST_LOG", "warn,hpn_importer=info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the importer");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the importer's stdout");
        let listen = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("the importer did not say where it listens: {line:?}"))
            .to_string();
        Importer {
            child,
            listen,
            _stdout: stdout,
        }
    }

    /// Wait until `/healthz` answers 200 (both servers connected: past its
    /// start-up, the consumers subscribing), at most 30 s. A test that takes a server away
    /// right after start waits for this first: before it, the importer may
    /// still be connecting, and the fault meets its start-up instead.
    pub async fn healthy(&self) {
        let listen = self.listen.as_str();
        eventually(
            Duration::from_secs(30),
            "the importer healthy at start",
            || async move {
                hpn_importer::fetch(listen, "/healthz")
                    .await
                    .is_some_and(|(status, _)| status == 200)
            },
        )
        .await;
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {signal}");
    }

    /// Wait for the process to exit, at most `limit`.
    pub async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < limit, "importer still running after {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Importer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn services(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services");
    let status = Command::new(script).args(args).status().expect("run scripts/services");
    assert!(status.success(), "scripts/services {args:?}");
}

/// `scripts/services ARGS`, which must succeed: what it printed, trimmed.
pub fn services_said(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services");
    let output = Command::new(script).args(args).output().expect("run scripts/services");
    assert!(
        output.status.success(),
        "scripts/services {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A setting of the single broker (the rabbit application's, such as
/// `consumer_timeout`), set while the guard lives and then put back as it
/// was (`scripts/services broker-env`).
pub struct BrokerSetting {
    name: &'static str,
    was: String,
}

impl BrokerSetting {
    pub fn set(name: &'static str, value: u64) -> BrokerSetting {
        let was = broker_env(&[name, &value.to_string()]);
        BrokerSetting { name, was }
    }
}

impl Drop for BrokerSetting {
    fn drop(&mut self) {
        broker_env(&[self.name, &self.was]);
    }
}

/// `scripts/services broker-env ARGS`: what the setting was.
fn broker_env(args: &[&str]) -> String {
    let was = services_said(&[&["broker-env"], args].concat());
    assert!(!was.is_empty(), "broker-env {args:?} said nothing");
    was
}

/// Poll `check` every 100 ms until it holds, at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn customers_file(env: &TestEnv, records: usize) -> PathBuf {
    let files = hpn_producer::generate::generate(&env.path("data"), records, 11).unwrap();
    files.customers
}

pub async fn publish(env: &TestEnv, file: &Path, rows_per_message: usize) {
    let options = PublishOptions {
        rows_per_message,
        ..PublishOptions::default()
    };
    publish_files(&env.settings.broker(), &[file.to_path_buf()], &options)
        .await
        .unwrap();
}

pub async fn count(env: &TestEnv) -> u64 {
    env.store().await.count(RecordKind::Customer).await.unwrap()
}

/// What a one-shot run that rode out a fault (`what`) must have done with
/// `file`'s `records` customers, imported one to a message into an empty
/// store: its report (`stdout`, JSON) counts every record once, inserted
/// (none updated, stale or rejected), nothing left, and the store's count
/// after; the store holds exactly the file; nothing was dead-lettered.
pub async fn assert_reported_once(env: &TestEnv, file: &Path, records: u64, stdout: &str, what: &str) {
    let report: serde_json::Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {stdout}"));
    let customers = &report["collections"][0];
    let figure = |name: &str| customers[name].as_u64();
    assert_eq!(
        (figure("processed"), figure("inserted")),
        (Some(records), Some(records)),
        "{what}: every record counted once: {customers}"
    );
    assert_eq!(figure("messages_left"), Some(0), "{what}: {customers}");
    assert_eq!(
        figure("count_after"),
        Some(count(env).await),
        "{what}: the store's count"
    );
    assert_exact(env, file).await;
    let dead = env.settings.topology().dead_letter_queue(RecordKind::Customer);
    assert_eq!(env.ready(&dead).await, 0, "{what}: nothing dead-lettered");
}

/// The store holds exactly the file's customers.
pub async fn assert_exact(env: &TestEnv, file: &Path) {
    let expected = expected_documents(RecordKind::Customer, &read_csv(file));
    let found = documents(&env.store().await, RecordKind::Customer).await;
    assert_eq!(found.len(), expected.len(), "document count");
    assert!(found == expected, "documents differ from the source");
}

/// `serve` importing a file of customers, with its listener on: where the
/// tests that take a server away in the middle of an import start.
pub struct ServedImport {
    pub file: PathBuf,
    pub records: u64,
    pub queue: String,
    pub listen: String,
    pub importer: Importer,
}

impl ServedImport {
    /// Publish `records` customers (100 per message), start `serve`, and
    /// return once the first records are written.
    pub async fn under_way(env: &TestEnv, records: usize) -> ServedImport {
        let file = customers_file(env, records);
        publish(env, &file, 100).await;
        let importer = Importer::start(env, &[]);
        let listen = importer.listen.clone();
        eventually(Duration::from_secs(60), "import under way", || async move {
            count(env).await > 0
        })
        .await;
        ServedImport {
            file,
            records: records as u64,
            queue: env.settings.topology().queue(RecordKind::Customer),
            listen,
            importer,
        }
    }

    /// An import of `records` customers of `file` from `queue` that
    /// `importer` is already serving.
    pub fn watching(file: PathBuf, records: u64, queue: String, importer: Importer) -> ServedImport {
        ServedImport {
            file,
            records,
            queue,
            listen: importer.listen.clone(),
            importer,
        }
    }

    /// Wait until every record is written and the queue is empty.
    pub async fn wait_until_done(&self, env: &TestEnv, after: &str) {
        let (records, queue) = (self.records, self.queue.as_str());
        eventually(
            Duration::from_secs(90),
            &format!("import finishes after {after}"),
            || async move { count(env).await == records },
        )
        .await;
        eventually(Duration::from_secs(20), "queue empties", || async move {
            env.ready(queue).await == 0
        })
        .await;
    }

    /// SIGTERM: exit 0 within 10 s; then the store holds exactly the file.
    pub async fn stop_and_check(mut self, env: &TestEnv) {
        self.importer.signal("TERM");
        assert!(self.importer.wait(Duration::from_secs(10)).await.success());
        assert_exact(env, &self.file).await;
    }
}
