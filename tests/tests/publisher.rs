//! The one confirmed publisher against a real broker: what it does when the
//! broker will not take a message. The producer, the dead letters, the
//! contention demo and the bench all publish through it, so a refusal never
//! passes for a delivery anywhere.

use hpn_common::error::EXIT_FAILED;
use hpn_common::publisher::ConfirmedPublisher;
use hpn_common::{broker, message, Error, QueueType, RecordKind};
use hpn_tests::process::{customers_file, producer_program, run};
use hpn_tests::TestEnv;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;

#[tokio::test]
async fn an_unroutable_message_is_an_error_not_a_delivery() {
    let env = TestEnv::new("publisher_unroutable");
    let connection = broker::connect(&env.settings.amqp_url, "hpn-tests").await.unwrap();
    let mut publisher = ConfirmedPublisher::open(&connection, 8).await.unwrap();
    let exchange = format!("{}.nowhere", env.settings.queue_prefix);
    publisher
        .channel()
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    publisher
        .publish(
            &exchange,
            "customer",
            b"{}",
            message::properties(RecordKind::Customer, None),
        )
        .await
        .unwrap();
    let error = publisher.flush().await.expect_err("nothing is bound to that exchange");
    assert!(matches!(error, Error::Unroutable(_)), "{error:?}");
    assert!(error.to_string().contains("could not route"), "{error}");
    assert_eq!(error.origin(), hpn_common::Origin::Broker);
    let _ = publisher
        .channel()
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_message_the_broker_refuses_is_an_error_not_a_delivery() {
    let env = TestEnv::new("publisher_nack");
    let connection = broker::connect(&env.settings.amqp_url, "hpn-tests").await.unwrap();
    let mut publisher = ConfirmedPublisher::open(&connection, 8).await.unwrap();
    // A queue that holds one message and refuses (nacks) the next.
    let queue = format!("{}.full", env.settings.queue_prefix);
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(1));
    arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    publisher
        .channel()
        .queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), arguments)
        .await
        .unwrap();
    let properties = || message::properties(RecordKind::Customer, None);
    publisher.publish("", &queue, b"{}", properties()).await.unwrap();
    publisher.flush().await.expect("the first fits");
    publisher.publish("", &queue, b"{}", properties()).await.unwrap();
    let error = publisher.flush().await.expect_err("the second is refused");
    assert!(error.to_string().contains("refused a message"), "{error}");
    assert!(
        matches!(error, Error::NotConfirmed(_)),
        "a nack, which may be sent again: {error:?}"
    );
    let _ = publisher
        .channel()
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    env.cleanup().await;
}

/// A producer whose queues exist with the other type (its settings say
/// quorum, the broker holds classic queues of those names) is refused the
/// declaration, a channel-level error that connecting again cannot mend: it
/// stops at once, in the broker's words, with the exit code of an input
/// that does not match the servers, and does not retry. A connection that
/// drops while the topology is declared is retried instead (the partition
/// nemesis); the two are told apart by the error, not by the connection's
/// state alone.
#[tokio::test]
async fn queues_of_the_other_type_stop_the_publish_at_once() {
    let mut env = TestEnv::new("publisher_other_type");
    env.settings.queue_type = QueueType::Classic;
    let connection = broker::connect(&env.settings.amqp_url, "hpn-tests").await.unwrap();
    env.settings.topology().declare(&connection).await.unwrap();
    broker::close(&connection, "declared").await;
    env.settings.queue_type = QueueType::Quorum;
    let file = customers_file(&env, 10);
    let ran = run(&env, &producer_program(), &["publish", file.to_str().unwrap()]);
    assert_eq!(ran.code, Some(EXIT_FAILED.into()), "{}", ran.stderr);
    assert!(ran.stderr.contains("inequivalent arg"), "{}", ran.stderr);
    assert!(!ran.stderr.contains("connecting again"), "retried: {}", ran.stderr);
    env.cleanup().await;
}
