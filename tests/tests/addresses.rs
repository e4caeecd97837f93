//! A malformed server address is a setting no retry can mend: every
//! command that reads one refuses it at start, once, as a settings error
//! (exit code 2), with the password hidden, whether the address came from
//! a flag's variable or from its `_FILE` secret; `serve` never retries it.
//! No server is needed: nothing here may get as far as connecting.

use hpn_common::config::env;
use hpn_common::error::EXIT_SETTINGS;
use hpn_tests::process::{importer_program, producer_program, Ran};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "S3cret-Pw";

/// Well-formed addresses nothing answers on: a command refused on a
/// malformed one must not get as far as trying the other.
const NOWHERE_AMQP: &str = "amqp://127.0.0.1:1/%2f";
const NOWHERE_MONGODB: &str = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500";

/// Each kind of malformed address, with the words that must name it.
fn malformed_amqp() -> Vec<(String, &'static str)> {
    vec![
        (format!("hpn:{PASSWORD}@127.0.0.1:5672/%2f"), "has no scheme"),
        (
            format!("http://hpn:{PASSWORD}@127.0.0.1:5672/%2f"),
            "its scheme is http://",
        ),
        (format!("amqp://hpn:{PASSWORD}@127.0.0.1:notaport/%2f"), "invalid port"),
        (
            format!("amqp://127.0.0.1:5672/%2f, amqp://hpn:{PASSWORD}@127.0.0.2:5672/%2f?heartbeat=often"),
            "address 2 of 2",
        ),
    ]
}

fn malformed_mongodb() -> Vec<(String, &'static str)> {
    vec![
        (format!("hpn:{PASSWORD}@127.0.0.1:27017"), "no scheme"),
        (format!("mongodb://hpn:{PASSWORD}@127.0.0.1:notaport"), "port"),
        (
            format!("mongodb+srv://hpn:{PASSWORD}@db.example:27017"),
            "port cannot be specified",
        ),
        (format!("mongodb://hpn:{PASSWORD}@127.0.0.1:27017/?tls=perhaps"), "tls"),
        (
            format!("mongodb://hpn:{PASSWORD}@127.0.0.1:27017/?w=1&journal=nope"),
            "journal",
        ),
    ]
}

/// Run `program` with `args` and only `vars` as our settings, killed if it
/// outlives `within` (a command that retried a malformed address would).
fn run_briefly(program: &Path, args: &[&str], vars: &[(&str, &str)], within: Duration) -> Ran {
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the program");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > within {
            child.kill().expect("kill");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("its output");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Every command that reads an address, as a person would run it.
fn commands(csv: &str) -> Vec<(&'static str, std::path::PathBuf, Vec<&str>)> {
    let importer = importer_program();
    let producer = producer_program();
    vec![
        ("publish", producer.clone(), vec!["publish", csv]),
        ("delete", producer, vec!["delete", "--kind", "customer", "C1"]),
        ("run", importer.clone(), vec!["run"]),
        ("serve", importer.clone(), vec!["serve", "--listen", "off"]),
        ("query", importer.clone(), vec!["query", "available-products"]),
        ("migrate", importer.clone(), vec!["migrate"]),
        ("compact", importer.clone(), vec!["compact", "--older-than", "1d"]),
        ("dead-letters", importer.clone(), vec!["dead-letters", "list"]),
        ("contention", importer.clone(), vec!["contention"]),
        ("reset", importer, vec!["reset", "--yes"]),
    ]
}

/// Which server's address a command reads.
fn reads(command: &str) -> (bool, bool) {
    match command {
        "publish" | "delete" | "dead-letters" => (true, false),
        "query" | "migrate" | "compact" => (false, true),
        _ => (true, true),
    }
}

fn assert_refused(case: &str, ran: &Ran, names: &str, why: &str) {
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(!said.contains(PASSWORD), "{case}: the password is shown: {said}");
    assert_eq!(
        ran.code,
        Some(EXIT_SETTINGS.into()),
        "{case}: a settings error's exit code: {said}"
    );
    let refusals: Vec<&str> = said.lines().filter(|l| l.contains(names)).collect();
    assert_eq!(refusals.len(), 1, "{case}: refused once, never retried: {said}");
    assert!(
        refusals[0].contains("settings:") && refusals[0].contains(why),
        "{case}: a settings error that says what is wrong ({why}): {said}"
    );
    assert!(!said.contains("reconnect"), "{case}: never retried: {said}");
}

#[test]
fn every_command_refuses_a_malformed_address_at_start_once_and_without_its_password() {
    let folder = tempfile::tempdir().unwrap();
    let csv = folder.path().join("customers.csv");
    std::fs::write(
        &csv,
        "user_id,name,address,zip_code,phone_number,email\nC1,A,1 Main,98101,555,a@x.com\n",
    )
    .unwrap();
    let csv = csv.to_str().unwrap().to_string();
    let within = Duration::from_secs(30);
    let mut cases = 0;
    for (command, program, args) in commands(&csv) {
        let (amqp, mongodb) = reads(command);
        if amqp {
            for (address, why) in malformed_amqp() {
                let vars = [(env::AMQP_URL, address.as_str()), (env::MONGODB_URI, NOWHERE_MONGODB)];
                let ran = run_briefly(&program, &args, &vars, within);
                assert_refused(&format!("{command}, {address}"), &ran, "RabbitMQ address", why);
                cases += 1;
            }
        }
        if mongodb {
            for (address, why) in malformed_mongodb() {
                let vars = [(env::AMQP_URL, NOWHERE_AMQP), (env::MONGODB_URI, address.as_str())];
                let ran = run_briefly(&program, &args, &vars, within);
                assert_refused(&format!("{command}, {address}"), &ran, "MongoDB connection string", why);
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 7 * 4 + 7 * 5, "every command, every kind of address it reads");
}

#[test]
fn a_malformed_address_in_a_secret_file_is_refused_the_same_way() {
    let folder = tempfile::tempdir().unwrap();
    let secret = |name: &str, text: String| {
        let path = folder.path().join(name);
        std::fs::write(&path, format!("{text}\n")).unwrap();
        path.to_str().unwrap().to_string()
    };
    let amqp = secret("amqp", format!("hpn:{PASSWORD}@127.0.0.1:5672/%2f"));
    let mongodb = secret("mongodb", format!("mongodb://hpn:{PASSWORD}@127.0.0.1:notaport"));
    let within = Duration::from_secs(30);
    let ran = run_briefly(
        &importer_program(),
        &["serve", "--listen", "off"],
        &[(env::AMQP_URL_FILE, &amqp), (env::MONGODB_URI, NOWHERE_MONGODB)],
        within,
    );
    assert_refused(
        "serve, RabbitMQ address from a file",
        &ran,
        "RabbitMQ address",
        "has no scheme",
    );
    let ran = run_briefly(
        &importer_program(),
        &["query", "orphans"],
        &[(env::MONGODB_URI_FILE, &mongodb)],
        within,
    );
    assert_refused(
        "query, MongoDB address from a file",
        &ran,
        "MongoDB connection string",
        "port",
    );
}
