//! Secure by default, against the secured pair of servers (`scripts/services
//! secure start`: RabbitMQ with TLS only and client certificates required,
//! the MongoDB-compatible server with `--auth`, TLS and client certificates
//! required; a private CA made with openssl; no default users).
//!
//! - Each binary works as a user with only what its role needs
//!   (docs/security.md): the producer may write to the records exchange and
//!   nothing else; the importer may configure, write and read its own
//!   prefix's exchanges and queues, and `readWrite` its own database.
//! - A TLS refusal (a CA that did not sign the server's certificate, a
//!   client without a certificate) is one clear error naming the server,
//!   and `serve` stops on it instead of retrying for ever.
//! - A store user without `readWrite` gets the store's "not authorized",
//!   reported as the store's; nothing is acknowledged or dead-lettered.
//! - No password reaches any output: `--help` with the variables set,
//!   logs at debug level, errors, reports, `/healthz`, `/metrics`.

use hpn_common::error::{EXIT_BROKER, EXIT_STORE};
use hpn_common::{broker, message, ConnectionSettings, RecordKind};
use hpn_tests::process::{customers_file, importer_program, producer_program, run_with, Ran};
use hpn_tests::secure::{unknown_ca, Secured, Tls};
use hpn_tests::{publish_raw, TestEnv};
use mongodb::bson::doc;
use std::time::{Duration, Instant};

/// A test's users and their settings: the importer's and the producer's,
/// each with a password of its own, on the test's prefix and database.
struct Roles {
    importer: ConnectionSettings,
    producer: ConnectionSettings,
    passwords: [String; 3],
}

/// The users of `env`'s prefix, made with the permissions docs/security.md
/// gives each role.
async fn roles(secured: &Secured, env: &TestEnv, tls: Tls<'_>) -> Roles {
    let prefix = &env.settings.queue_prefix;
    let id = std::process::id();
    let (importer, producer) = (format!("{prefix}_importer"), format!("{prefix}_producer"));
    let passwords = [
        format!("Imp-amqp-5ecret-{id}"),
        format!("Prod-amqp-5ecret-{id}"),
        format!("Imp-mongo-5ecret-{id}"),
    ];
    let own = format!("^{prefix}\\.");
    secured.rabbit_user(&importer, &passwords[0], &own, &own, &own);
    secured.rabbit_user(&producer, &passwords[1], "^$", &format!("^{prefix}\\.records$"), "^$");
    secured
        .mongo_user(
            &importer,
            &passwords[2],
            vec![doc! {"role": "readWrite", "db": &env.settings.database}],
        )
        .await;
    let importer_settings = ConnectionSettings {
        amqp_url: secured.amqp_url(&importer, &passwords[0], tls),
        mongodb_uri: secured.mongodb_uri(Some((&importer, &passwords[2])), tls),
        ..env.settings.clone()
    };
    let producer_settings = ConnectionSettings {
        amqp_url: secured.amqp_url(&producer, &passwords[1], tls),
        mongodb_uri: "mongodb://unused.invalid".into(),
        ..env.settings.clone()
    };
    Roles {
        importer: importer_settings,
        producer: producer_settings,
        passwords,
    }
}

/// A test's corner of the secured servers, cleaned up as their administrators.
async fn secured_env(test: &str) -> (Secured, TestEnv) {
    let secured = Secured::new();
    let mut env = TestEnv::new(test);
    env.settings = secured.admin_settings(&env.settings.queue_prefix).await;
    (secured, env)
}

fn importer(settings: &ConnectionSettings, args: &[&str]) -> Ran {
    run_with(settings, &importer_program(), args, &[("RUST_LOG", "warn")])
}

#[tokio::test]
async fn least_privileged_users_over_mutual_tls_publish_import_dead_letter_and_reset() {
    let (secured, env) = secured_env("sec_roles").await;
    let ca = secured.ca();
    let roles = roles(&secured, &env, secured.mutual(&ca)).await;
    let topology = env.settings.topology();

    // The importer declares the topology: it may configure its prefix.
    let first = importer(&roles.importer, &["run", "--json"]);
    assert_eq!(first.code, Some(0), "an empty run as the importer: {}", first.stderr);

    // The producer may only write to the records exchange: its declarations
    // are refused, and it publishes to what the importer declared.
    let file = customers_file(&env, 300);
    let published = run_with(
        &roles.producer,
        &producer_program(),
        &["publish", "--json", &file.display().to_string()],
        &[("RUST_LOG", "warn")],
    );
    assert_eq!(
        published.code,
        Some(0),
        "publishing as the producer: {}",
        published.stderr
    );
    assert_eq!(published.json()["published"], 300);

    // As the producer: a bad message is published, and reading is refused.
    let connection = broker::connect(&roles.producer.amqp_url, "hpn-tests (producer)")
        .await
        .expect("the producer connects over mutual TLS");
    let channel = connection.create_channel().await.unwrap();
    let props = message::properties(RecordKind::Customer, None);
    publish_raw(&channel, &topology, RecordKind::Customer, br#"{"user_id":"X"}"#, props).await;
    let consumed = broker::subscribe(&channel, &topology.queue(RecordKind::Customer)).await;
    let refused = consumed.expect_err("the producer may not consume");
    assert!(broker::access_refused(&refused), "{refused}");
    let _ = connection.close(200, "done".into()).await;

    // The importer imports the good records and dead-letters the bad one.
    let ran = importer(&roles.importer, &["run", "--json"]);
    assert_eq!(ran.code, Some(0), "importing as the importer: {}", ran.stderr);
    let customers = ran.json()["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["collection"] == "customers")
        .cloned()
        .expect("customers in the report");
    assert_eq!(
        (customers["inserted"].as_u64(), customers["rejected"].as_u64()),
        (Some(300), Some(1))
    );
    assert_eq!(
        env.ready(&topology.dead_letter_queue(RecordKind::Customer)).await,
        1,
        "dead-lettered"
    );
    hpn_tests::process::assert_exact(&env, &file).await;

    // And it may reset its own database and queues.
    let reset = importer(&roles.importer, &["reset", "--yes"]);
    assert_eq!(reset.code, Some(0), "reset as the importer: {}", reset.stderr);
    assert_eq!(env.store().await.count(RecordKind::Customer).await.unwrap(), 0);
    assert_eq!(env.ready(&topology.dead_letter_queue(RecordKind::Customer)).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn tls_refusals_are_one_clear_error_naming_the_server_and_serve_stops_on_them() {
    let (secured, env) = secured_env("sec_tls").await;
    let ca = secured.ca();
    let good = secured.mutual(&ca);
    let roles = roles(&secured, &env, good).await;
    let other = unknown_ca(env.dir.path());
    let wrong_ca = Tls {
        ca: &other,
        client_cert: true,
    };
    let no_client_cert = Tls {
        ca: &ca,
        client_cert: false,
    };
    let user = format!("{}_importer", env.settings.queue_prefix);
    let cases = [
        (
            "RabbitMQ, a CA that did not sign its certificate",
            ConnectionSettings {
                amqp_url: secured.amqp_url(&user, &roles.passwords[0], wrong_ca),
                ..roles.importer.clone()
            },
            "RabbitMQ",
            &["UnknownIssuer"][..],
        ),
        (
            "RabbitMQ, no client certificate",
            ConnectionSettings {
                amqp_url: secured.amqp_url(&user, &roles.passwords[0], no_client_cert),
                ..roles.importer.clone()
            },
            "RabbitMQ",
            &["give certfile and keyfile", "CertificateRequired"][..],
        ),
        (
            "MongoDB, a CA that did not sign its certificate",
            ConnectionSettings {
                mongodb_uri: secured.mongodb_uri(Some((&user, &roles.passwords[2])), wrong_ca),
                ..roles.importer.clone()
            },
            "MongoDB",
            &["UnknownIssuer"][..],
        ),
    ];
    // Our own lines that give the cause (lapin logs its I/O errors too).
    let giving = |text: &str, cause: &[&str]| -> usize {
        text.lines()
            .filter(|l| !l.contains("lapin::") && cause.iter().any(|c| l.contains(c)))
            .count()
    };
    for (case, settings, server, cause) in &cases {
        let started = Instant::now();
        let ran = importer(settings, &["run"]);
        eprintln!(
            "{case}: run exited {:?} in {:.1?}: {}",
            ran.code,
            started.elapsed(),
            ran.stderr.trim()
        );
        let code = if *server == "RabbitMQ" { EXIT_BROKER } else { EXIT_STORE };
        assert_eq!(
            ran.code,
            Some(code.into()),
            "{case}: the exit code of its server: {}",
            ran.stderr
        );
        assert!(ran.stderr.contains(server), "{case}: names the server: {}", ran.stderr);
        assert_eq!(giving(&ran.stderr, cause), 1, "{case}: the cause, once: {}", ran.stderr);
        let blamed = if *server == "RabbitMQ" { "MongoDB:" } else { "RabbitMQ:" };
        assert!(
            !ran.stderr.contains(blamed),
            "{case}: the other server blamed: {}",
            ran.stderr
        );

        // serve says it once and stops, rather than retrying for ever.
        let started = Instant::now();
        let served = run_with(
            settings,
            &importer_program(),
            &["serve", "--listen", "off"],
            &[("RUST_LOG", "info")],
        );
        eprintln!("{case}: serve exited {:?} in {:.1?}", served.code, started.elapsed());
        assert_ne!(served.code, Some(0), "{case}: serve ends with an error");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{case}: serve stopped within a minute"
        );
        let said = giving(&served.stderr, cause);
        assert!(
            (1..=3).contains(&said),
            "{case}: the cause said once in the log when it stops and once as the exit error (and once \
             more when the first try was cut short before the cause was known), not {said} times: {}",
            served.stderr
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_store_user_without_read_write_gets_not_authorized_from_the_store_and_nothing_is_lost() {
    let (secured, env) = secured_env("sec_readonly").await;
    let ca = secured.ca();
    let tls = secured.mutual(&ca);
    let roles = roles(&secured, &env, tls).await;
    let reader = format!("{}_reader", env.settings.queue_prefix);
    secured
        .mongo_user(
            &reader,
            "Reader-5ecret",
            vec![doc! {"role": "read", "db": &env.settings.database}],
        )
        .await;
    let reading = ConnectionSettings {
        mongodb_uri: secured.mongodb_uri(Some((&reader, "Reader-5ecret")), tls),
        ..roles.importer.clone()
    };
    let (_connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    for i in 0..20 {
        let body = format!(r#"{{"user_id":"R{i}","name":"N","address":"A","phone_number":"1","email":"r@x.com"}}"#);
        let props = message::properties(RecordKind::Customer, None);
        publish_raw(&channel, &topology, RecordKind::Customer, body.as_bytes(), props).await;
    }
    let ran = importer(&reading, &["run"]);
    eprintln!("a read-only store user: exit {:?}: {}", ran.code, ran.stderr.trim());
    assert_eq!(ran.code, Some(EXIT_STORE.into()), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("MongoDB") && ran.stderr.contains("not authorized"),
        "the store's own words: {}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("RabbitMQ"), "never the broker's: {}", ran.stderr);
    assert_eq!(
        env.ready(&topology.queue(RecordKind::Customer)).await,
        20,
        "every message still queued"
    );
    assert_eq!(
        env.ready(&topology.dead_letter_queue(RecordKind::Customer)).await,
        0,
        "nothing dead-lettered"
    );
    env.cleanup().await;
}

/// Every output a user, a log collector or a scraper can see, with real
/// and wrong passwords set, searched for the passwords.
#[tokio::test]
async fn no_password_reaches_any_output() {
    let (secured, env) = secured_env("sec_secrets").await;
    let ca = secured.ca();
    let tls = secured.mutual(&ca);
    let roles = roles(&secured, &env, tls).await;
    let mut outputs: Vec<(String, String)> = Vec::new();
    fn keep(outputs: &mut Vec<(String, String)>, what: &str, ran: Ran) -> Ran {
        outputs.push((what.to_string(), format!("{}\n{}", ran.stdout, ran.stderr)));
        ran
    }
    let debug = [("RUST_LOG", "debug")];

    // --help of every command, with the variables holding the passwords.
    for (program, args) in [
        (importer_program(), vec!["--help"]),
        (importer_program(), vec!["run", "--help"]),
        (importer_program(), vec!["serve", "--help"]),
        (importer_program(), vec!["reset", "--help"]),
        (producer_program(), vec!["publish", "--help"]),
    ] {
        let ran = keep(
            &mut outputs,
            &format!("{args:?} help"),
            run_with(&roles.importer, &program, &args, &debug),
        );
        assert_eq!(ran.code, Some(0), "{args:?}: {}", ran.stderr);
        if args.len() > 1 {
            assert!(
                ran.stdout.contains("HPN_AMQP_URL"),
                "the variable is named: {}",
                ran.stdout
            );
        }
    }

    // A publish and an import that work, logging at debug level.
    let file = customers_file(&env, 50);
    let first = keep(
        &mut outputs,
        "empty run",
        run_with(&roles.importer, &importer_program(), &["run", "--json"], &debug),
    );
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let published = keep(
        &mut outputs,
        "publish",
        run_with(
            &roles.producer,
            &producer_program(),
            &["publish", "--json", &file.display().to_string()],
            &debug,
        ),
    );
    assert_eq!(published.code, Some(0), "{}", published.stderr);
    // The importer reads its addresses from secret files this time.
    let (amqp_file, mongodb_file) = (env.path("amqp-url"), env.path("mongodb-uri"));
    std::fs::write(&amqp_file, format!("{}\n", roles.importer.amqp_url)).unwrap();
    std::fs::write(&mongodb_file, &roles.importer.mongodb_uri).unwrap();
    let from_files = ConnectionSettings {
        amqp_url: "amqp://nobody:nothing@127.0.0.1:1/%2f".into(),
        mongodb_uri: "mongodb://127.0.0.1:1".into(),
        ..roles.importer.clone()
    };
    let files = [
        ("HPN_AMQP_URL_FILE", amqp_file.to_str().unwrap()),
        ("HPN_MONGODB_URI_FILE", mongodb_file.to_str().unwrap()),
        ("RUST_LOG", "debug"),
    ];
    let ran = keep(
        &mut outputs,
        "run from secret files",
        run_with(&from_files, &importer_program(), &["run", "--json"], &files),
    );
    assert_eq!(ran.code, Some(0), "the addresses from the files: {}", ran.stderr);
    assert_eq!(ran.json()["collections"][0]["inserted"], 50, "{}", ran.stdout);

    // serve, with /healthz and /metrics read while it runs.
    let mut served = std::process::Command::new(importer_program())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(roles.importer.env_vars())
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(served.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let listen = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("where it listens")
        .to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for path in ["/healthz", "/metrics"] {
        let (status, body) = hpn_importer::fetch(&listen, path).await.expect("the listener answers");
        assert_eq!(status, 200, "{path}: {body}");
        outputs.push((path.to_string(), body));
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &served.id().to_string()])
        .status();
    let output = served.wait_with_output().unwrap();
    outputs.push(("serve".into(), String::from_utf8_lossy(&output.stderr).into_owned()));

    // Refusals: a wrong password to each server, and an unreachable one.
    let wrong = ConnectionSettings {
        amqp_url: roles
            .importer
            .amqp_url
            .replace(&roles.passwords[0], "Wrong-amqp-5ecret"),
        ..roles.importer.clone()
    };
    let ran = keep(
        &mut outputs,
        "wrong broker password",
        run_with(&wrong, &importer_program(), &["run"], &debug),
    );
    assert_eq!(ran.code, Some(EXIT_BROKER.into()), "{}", ran.stderr);
    let wrong = ConnectionSettings {
        mongodb_uri: roles
            .importer
            .mongodb_uri
            .replace(&roles.passwords[2], "Wrong-mongo-5ecret"),
        ..roles.importer.clone()
    };
    let ran = keep(
        &mut outputs,
        "wrong store password",
        run_with(&wrong, &importer_program(), &["run"], &debug),
    );
    assert_eq!(ran.code, Some(EXIT_STORE.into()), "{}", ran.stderr);
    let gone = ConnectionSettings {
        amqp_url: format!("amqp://hpn:{}@127.0.0.1:1/%2f", roles.passwords[0]),
        ..roles.importer.clone()
    };
    keep(
        &mut outputs,
        "unreachable broker",
        run_with(&gone, &importer_program(), &["run"], &debug),
    );
    let gone = ConnectionSettings {
        amqp_url: format!("amqp://hpn:{}@127.0.0.1:1/%2f", roles.passwords[1]),
        ..roles.producer.clone()
    };
    keep(
        &mut outputs,
        "unreachable broker, producer",
        run_with(
            &gone,
            &producer_program(),
            &["publish", &file.display().to_string()],
            &debug,
        ),
    );

    let secrets = roles
        .passwords
        .iter()
        .map(String::as_str)
        .chain(["Wrong-amqp-5ecret", "Wrong-mongo-5ecret"]);
    let mut leaks = Vec::new();
    for secret in secrets {
        for (what, text) in &outputs {
            if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                leaks.push(format!("{what}: {line}"));
            }
        }
    }
    let searched: usize = outputs.iter().map(|(_, t)| t.lines().count()).sum();
    eprintln!("searched {} outputs, {searched} lines, for 5 passwords", outputs.len());
    assert!(
        searched > 200,
        "the outputs were searched where there is something to find"
    );
    assert!(leaks.is_empty(), "passwords printed:\n{}", leaks.join("\n"));
    env.cleanup().await;
}
