//! `ConnectionSettings::from_env` takes the same path as the binaries: the
//! `_FILE` secrets read, the addresses checked. One test in its own binary,
//! since it sets the process's environment.

use hpn_common::{ConnectionSettings, Error};

#[test]
fn settings_from_the_environment_read_the_file_secrets_and_check_the_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let amqp = dir.path().join("amqp");
    let mongodb = dir.path().join("mongodb");
    std::fs::write(&amqp, "amqp://hpn:s3cret@rabbit.example:5672/%2f\n").unwrap();
    std::fs::write(&mongodb, "mongodb://hpn:s3cret@mongo.example:27017\n").unwrap();
    std::env::set_var("HPN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    std::env::set_var("HPN_AMQP_URL_FILE", &amqp);
    std::env::set_var("HPN_MONGODB_URI_FILE", &mongodb);
    std::env::set_var("HPN_DATABASE", "from_env_test");
    let settings = ConnectionSettings::from_env().expect("readable secrets");
    assert_eq!(
        settings.amqp_url, "amqp://hpn:s3cret@rabbit.example:5672/%2f",
        "the file wins"
    );
    assert_eq!(settings.mongodb_uri, "mongodb://hpn:s3cret@mongo.example:27017");
    assert_eq!(settings.database, "from_env_test");

    std::fs::write(&amqp, "amqp://hpn:s3cret@rabbit.example:notaport/%2f").unwrap();
    let refused = ConnectionSettings::from_env().expect_err("a malformed address is refused");
    assert!(matches!(refused, Error::Settings(_)), "{refused:?}");
    assert!(
        !refused.to_string().contains("s3cret"),
        "the password is hidden: {refused}"
    );

    std::fs::remove_file(&mongodb).unwrap();
    std::fs::write(&amqp, "amqp://hpn:s3cret@rabbit.example:5672/%2f").unwrap();
    let missing = ConnectionSettings::from_env().expect_err("a secret file that is not there is refused");
    assert!(missing.to_string().contains("mongodb"), "it names the file: {missing}");
}
