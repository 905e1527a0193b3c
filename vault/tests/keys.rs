//! Data keys against the real broker: a key made by one process opens in another that
//! reads the topic from its start; rotating the deployment key re-wraps every data key
//! without touching what they sealed, so the old deployment key can go; destroying a
//! tenant's keys leaves its sealed values unopenable in a fresh process.

use std::sync::Arc;

use aiq_kafka::{KafkaSettings, apply_topics};
use aiq_secrets::Keyring;
use aiq_testkit::{KAFKA, require_service, unique};
use aiq_topics::TenantId;
use aiq_vault::Vault;
use serde_json::json;

async fn follow(kafka: &KafkaSettings, ring: &str) -> Arc<Vault> {
    let keyring = Arc::new(Keyring::parse("test", ring).expect("keyring"));
    let f = aiq_vault::spawn(kafka, Some(keyring)).await.expect("spawn");
    let mut tail = f.tail.expect("a tail when on");
    tail.caught_up().await;
    // The follower runs while its handle lives; the test's runtime ends it.
    std::mem::forget(tail);
    f.vault
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_travel_rotate_and_are_destroyed_through_the_topic() {
    let brokers = require_service!(KAFKA);
    let kafka = KafkaSettings::plaintext(brokers, format!("{}.", unique("vault")), 1, 1);
    apply_topics(&kafka, &kafka.topics()).await.expect("apply");
    let old = Keyring::new_key_line("k1").unwrap();
    let new = Keyring::new_key_line("k2").unwrap();
    let acme = TenantId::new("acme").unwrap();

    // One process makes acme's key and seals; another, started after, opens.
    let first = follow(&kafka, &old).await;
    first.ensure(&acme).await.expect("ensure");
    let sealed = first
        .seal(&acme, "input", &json!({"card": "4111"}))
        .unwrap();
    let second = follow(&kafka, &old).await;
    let mut v = json!({"input": sealed.clone()});
    second.open_tree(&acme, &mut v).expect("opens");
    assert_eq!(v["input"]["card"], "4111");
    // A second ensure finds the key: one key for the tenant.
    second.ensure(&acme).await.expect("ensure");
    assert_eq!(second.key_ids(&acme).len(), 1);

    // Rotation: with the new deployment key first, every data key is re-wrapped...
    let rotated = follow(&kafka, &format!("{new}\n{old}")).await;
    assert_eq!(rotated.rewrap_blocking().expect("rewrap"), 1);
    assert_eq!(rotated.rewrap_blocking().expect("rewrap"), 0, "idempotent");
    // ... so a process holding only the new one opens what the old era sealed.
    let only_new = follow(&kafka, &new).await;
    let mut v = json!({"input": sealed.clone()});
    only_new
        .open_tree(&acme, &mut v)
        .expect("opens after rotation");
    assert_eq!(v["input"]["card"], "4111");

    // Destroyed: gone here and in a process that reads the topic from its start.
    let destroyed = only_new.destroy_blocking(&acme).expect("destroy");
    assert_eq!(destroyed.len(), 1);
    let fresh = follow(&kafka, &new).await;
    assert!(fresh.key_ids(&acme).is_empty());
    let mut v = json!({"input": sealed});
    assert!(fresh.open_tree(&acme, &mut v).is_err());
    assert!(
        only_new.seal(&acme, "input", &json!(1)).is_err(),
        "nothing more sealed"
    );
}
