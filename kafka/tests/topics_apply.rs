//! `apply_topics` against the real broker: creates, leaves alone, restores, reports.

use std::time::Duration;

use aiq_kafka::{KafkaError, KafkaSettings, TopicAction, apply_topics, check_partitions};
use aiq_testkit::{KAFKA, require_service, unique};
use aiq_topics::TopicKind;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;

fn settings(brokers: String, prefix: String) -> KafkaSettings {
    KafkaSettings::plaintext(brokers, prefix, 4, 3)
}

fn admin(s: &KafkaSettings) -> AdminClient<DefaultClientContext> {
    s.client_config().create().expect("admin client")
}

fn partitions(s: &KafkaSettings, topic: &str) -> usize {
    let md = admin(s)
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()[0].partitions().len()
}

async fn config_value(s: &KafkaSettings, topic: &str, key: &str) -> Option<String> {
    let res = admin(s)
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe");
    let resource = res.into_iter().next().expect("one").expect("ok");
    resource
        .entries
        .into_iter()
        .find(|e| e.name == key)
        .and_then(|e| e.value)
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_twice_creates_then_changes_nothing() {
    let brokers = require_service!(KAFKA);
    let s = settings(brokers, format!("{}.", unique("apply")));
    let set = s.topics();

    let first = apply_topics(&s, &set).await.expect("first apply");
    assert_eq!(first.len(), set.specs().len());
    assert!(
        first.iter().all(|r| r.action == TopicAction::Created),
        "{first:?}"
    );

    let second = apply_topics(&s, &set).await.expect("second apply");
    assert!(
        second.iter().all(|r| r.action == TopicAction::Unchanged),
        "{second:?}"
    );

    for spec in set.specs() {
        assert_eq!(
            partitions(&s, &spec.name),
            spec.partitions as usize,
            "{}",
            spec.name
        );
        for (key, value) in spec.configs() {
            assert_eq!(
                config_value(&s, &spec.name, key).await.as_deref(),
                Some(value.as_str()),
                "{} {key}",
                spec.name
            );
        }
    }
    let triggers = set.get(TopicKind::Triggers);
    assert_eq!(triggers.name, format!("{}triggers", s.topic_prefix));
    for kind in [TopicKind::Results, TopicKind::Signals, TopicKind::Changelog] {
        assert_eq!(partitions(&s, set.name(kind)), triggers.partitions as usize);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_config_is_restored_and_a_partition_count_is_reported() {
    let brokers = require_service!(KAFKA);
    let s = settings(brokers, format!("{}.", unique("drift")));
    let set = s.topics();
    let triggers = set.name(TopicKind::Triggers).to_owned();
    let events = set.name(TopicKind::Events).to_owned();

    // Someone created the triggers topic by hand with too few partitions.
    let a = admin(&s);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    a.create_topics(
        &[NewTopic::new(&triggers, 2, TopicReplication::Fixed(1))],
        &opts,
    )
    .await
    .expect("create")
    .into_iter()
    .for_each(|r| {
        r.expect("created");
    });

    let reports = apply_topics(&s, &set).await.expect("apply");
    let report = reports
        .iter()
        .find(|r| r.topic == triggers)
        .expect("triggers report");
    match &report.action {
        TopicAction::Drift(why) => {
            assert!(why.starts_with("has 2 partitions, declared 4"), "{why}")
        }
        other => panic!("expected drift, got {other:?}"),
    }
    assert_eq!(
        partitions(&s, &triggers),
        2,
        "apply must not add partitions"
    );

    // Someone shortened the events topic's retention.
    a.alter_configs(
        &[AlterConfig::new(ResourceSpecifier::Topic(&events)).set("retention.ms", "1000")],
        &opts,
    )
    .await
    .expect("alter")
    .into_iter()
    .for_each(|r| {
        r.expect("altered");
    });
    // KRaft applies config changes through its metadata log; wait until the broker
    // reports the hand-made change before asking apply to notice it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while config_value(&s, &events, "retention.ms").await.as_deref() != Some("1000") {
        assert!(
            std::time::Instant::now() < deadline,
            "the altered config never became visible"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reports = apply_topics(&s, &set).await.expect("apply again");
    let report = reports
        .iter()
        .find(|r| r.topic == events)
        .expect("events report");
    match &report.action {
        TopicAction::Updated(changes) => {
            assert_eq!(
                changes,
                &vec![(
                    "retention.ms".to_owned(),
                    Some("1000".to_owned()),
                    (7 * 24 * 3600 * 1000u64).to_string()
                )]
            );
        }
        other => panic!("expected an update, got {other:?}"),
    }
    let declared = set.get(TopicKind::Events).configs();
    let retention = declared
        .iter()
        .find(|(k, _)| *k == "retention.ms")
        .map(|(_, v)| v.clone());
    assert_eq!(config_value(&s, &events, "retention.ms").await, retention);
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_whose_partition_counts_differ_from_the_topics_are_refused() {
    let brokers = require_service!(KAFKA);
    let prefix = format!("{}.", unique("counts"));
    let created = settings(brokers.clone(), prefix.clone());
    apply_topics(&created, &created.topics())
        .await
        .expect("apply");
    check_partitions(&created, &created.topics()).expect("the counts the topics were made with");

    // The same topics, read with other counts: each setting is named with the topic's.
    let tenant = KafkaSettings::plaintext(brokers.clone(), prefix.clone(), 12, 3);
    match check_partitions(&tenant, &tenant.topics()) {
        Err(KafkaError::Setting { field, reason }) => {
            assert_eq!(field, "tenant_partitions");
            assert!(reason.starts_with("is 12, but topic"), "{reason}");
            assert!(reason.contains("has 4 partitions"), "{reason}");
        }
        other => panic!("expected the tenant count refused, got {other:?}"),
    }
    let work = KafkaSettings::plaintext(brokers.clone(), prefix, 4, 5);
    match check_partitions(&work, &work.topics()) {
        Err(KafkaError::Setting { field, reason }) => {
            assert_eq!(field, "work_partitions");
            assert!(reason.contains("has 3 partitions"), "{reason}");
        }
        other => panic!("expected the work count refused, got {other:?}"),
    }

    // Topics not made yet are not checked.
    let fresh = KafkaSettings::plaintext(brokers, format!("{}.", unique("none")), 9, 9);
    check_partitions(&fresh, &fresh.topics()).expect("nothing to compare with");
}
