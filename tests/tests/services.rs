//! `scripts/services` as an operator meets it on a machine that already
//! runs something: a local RabbitMQ it did not start (most often the
//! system's, which Debian's package starts on every interface when it is
//! installed) is refused with what to do, not adopted, unless asked for.

use std::net::TcpListener;
use std::process::Command;

fn start_rabbitmq(port: u16, state: &std::path::Path, adopt: bool) -> (Option<i32>, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services");
    let mut command = Command::new(script);
    command
        .args(["start", "rabbitmq"])
        .env("HPN_AMQP_URL", format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
        .env("HPN_SERVICES_DIR", state)
        .env_remove("HPN_ADOPT_RABBITMQ");
    if adopt {
        command.env("HPN_ADOPT_RABBITMQ", "1");
    }
    let output = command.output().expect("scripts/services runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_local_broker_the_script_did_not_start_is_refused_unless_asked_for() {
    // Something answers on a local port: the script did not start it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = tempfile::tempdir().unwrap();
    let (code, said) = start_rabbitmq(port, state.path(), false);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("did not start") && said.contains("HPN_ADOPT_RABBITMQ=1"),
        "says what it is and what to do: {said}"
    );
    let (code, said) = start_rabbitmq(port, state.path(), true);
    assert_eq!(code, Some(0), "asked for, it is used as it is: {said}");
    assert!(
        said.contains(&format!("RabbitMQ answers on 127.0.0.1:{port}")),
        "{said}"
    );
}
