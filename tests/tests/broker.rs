//! What the consumers rely on from lapin and RabbitMQ, checked against a
//! real broker rather than taken from documentation.

use futures::StreamExt;
use hpn_common::publisher::ConfirmedPublisher;
use hpn_common::{message, RecordKind};
use hpn_tests::TestEnv;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicQosOptions};
use std::time::Duration;

/// The consumer re-subscribes when its per-consumer prefetch moves
/// (`importer::source::consume`): it cancels, takes what the cancelled
/// subscription still brings, and acknowledges it on the same channel.
/// That needs lapin to end a cancelled consumer's stream after the
/// deliveries already sent to it, and only then.
#[tokio::test]
async fn a_cancelled_consumer_still_yields_what_it_was_sent_then_ends() {
    let env = TestEnv::new("broker_cancel");
    let (connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    let queue = topology.queue(RecordKind::Customer);
    let mut publisher = ConfirmedPublisher::open(&connection, 64).await.unwrap();
    let body = message::encode(&[hpn_tests::customer("C1", "Customer")]);
    for _ in 0..100 {
        publisher
            .publish(
                &topology.exchange(),
                "customer",
                &body,
                message::properties(RecordKind::Customer, None),
            )
            .await
            .unwrap();
    }
    publisher.close().await.unwrap();

    channel.basic_qos(30, BasicQosOptions { global: false }).await.unwrap();
    let mut consumer = hpn_common::broker::subscribe(&channel, &queue).await.unwrap();
    let first = consumer.next().await.unwrap().unwrap();
    // Let the broker fill the prefetch before cancelling.
    tokio::time::sleep(Duration::from_millis(300)).await;
    channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    let mut tags = vec![first.delivery_tag];
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(delivery) = consumer.next().await {
            tags.push(delivery.unwrap().delivery_tag);
        }
    })
    .await;
    assert!(rest.is_ok(), "the cancelled consumer's stream ended");
    assert_eq!(
        tags,
        (1..=30).collect::<Vec<u64>>(),
        "every delivery in hand, in order, no more"
    );
    channel
        .basic_ack(30, BasicAckOptions { multiple: true })
        .await
        .expect("the deliveries of a cancelled subscription are acknowledged on its channel");
    assert_eq!(env.ready(&queue).await, 70, "the rest stayed queued");
    env.cleanup().await;
}

/// The broker refuses a body over the message contract's limit at publish
/// (`max_message_size`, set by `scripts/services` and in the configs under
/// `deploy/`), so an oversized message never reaches a queue or an
/// importer's memory; one at the limit goes in.
#[tokio::test]
async fn the_broker_refuses_a_body_over_the_contracts_limit_at_publish() {
    let env = TestEnv::new("broker_max_size");
    let (connection, _) = env.channel().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let topology = env.settings.topology();
    let publish = |size: usize| {
        let channel = channel.clone();
        let exchange = topology.exchange();
        async move {
            let sent = channel
                .basic_publish(
                    exchange.as_str().into(),
                    "customer".into(),
                    lapin::options::BasicPublishOptions::default(),
                    &vec![b' '; size],
                    message::properties(RecordKind::Customer, None),
                )
                .await;
            match sent {
                Ok(confirm) => confirm.await.map(|_| ()),
                Err(e) => Err(e),
            }
        }
    };
    publish(message::DEFAULT_MAX_MESSAGE_BYTES)
        .await
        .expect("a body at the limit is taken");
    let refused = publish(message::DEFAULT_MAX_MESSAGE_BYTES + 1)
        .await
        .expect_err("a body over the limit is refused");
    assert!(
        refused.to_string().contains("larger than configured max size"),
        "{refused}"
    );
    env.cleanup().await;
}
