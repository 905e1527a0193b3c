//! Migrations against the real store: applied once each, recorded, and usable.

use aiq_sql::{CqlSettings, MIGRATIONS, applied_migrations, apply_schema, connect};
use aiq_testkit::{CQL, require_service, unique};
use chrono::{DateTime, Utc};
use uuid::Uuid;

fn settings(contact_points: String) -> CqlSettings {
    CqlSettings {
        contact_points,
        keyspace: unique("ks").to_lowercase(),
        replication_factor: 1,
        datacenters: vec![],
        username: None,
        password: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_twice_applies_each_migration_once_and_rows_read_back() {
    let cql = require_service!(CQL);
    let s = settings(cql);
    let session = connect(&s).await.expect("connect");
    let ks = s.keyspace.clone();

    let t1 = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let first = apply_schema(&session, &s, t1).await.expect("first apply");
    assert_eq!(first.len(), MIGRATIONS.len());
    let second = apply_schema(&session, &s, Utc::now())
        .await
        .expect("second apply");
    assert!(second.is_empty(), "second apply applied {second:?}");

    let ledger = applied_migrations(&session, &ks).await.expect("ledger");
    assert_eq!(ledger.len(), MIGRATIONS.len());
    for m in MIGRATIONS {
        let rec = &ledger[&m.version];
        assert_eq!(rec.name, m.name);
        assert_eq!(rec.checksum, m.checksum());
        // Recorded at the first apply; the second did not rewrite it.
        assert_eq!(rec.applied_at, Some(t1));
    }

    // A row written through the driver reads back.
    let run = Uuid::new_v4();
    let started: DateTime<Utc> = DateTime::from_timestamp_millis(1_800_000_123_456).expect("time");
    session
        .query_unpaged(
            format!("INSERT INTO {ks}.runs (tenant, run_id, workflow, version, status, started_at) VALUES (?, ?, ?, ?, ?, ?)"),
            ("acme", run, "order-sync", 3_i32, "running", started),
        )
        .await
        .expect("insert");
    let row: (String, i32, String, DateTime<Utc>) = session
        .query_unpaged(
            format!("SELECT workflow, version, status, started_at FROM {ks}.runs WHERE tenant = ? AND run_id = ?"),
            ("acme", run),
        )
        .await
        .expect("select")
        .into_rows_result()
        .expect("rows")
        .single_row()
        .expect("one row");
    assert_eq!(
        row,
        ("order-sync".to_owned(), 3, "running".to_owned(), started)
    );

    // The TTL backstop of the history tables is in place.
    let ttl: (Option<i32>,) = session
        .query_unpaged(
            format!("SELECT TTL(status) FROM {ks}.runs WHERE tenant = ? AND run_id = ?"),
            ("acme", run),
        )
        .await
        .expect("ttl")
        .into_rows_result()
        .expect("rows")
        .single_row()
        .expect("one row");
    let ttl = ttl.0.expect("a TTL is set");
    assert!(ttl > 7_776_000 - 600 && ttl <= 7_776_000, "ttl {ttl}");

    session
        .query_unpaged(format!("DROP KEYSPACE {ks}"), ())
        .await
        .expect("drop keyspace");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_keyspace_name_is_refused_before_any_statement() {
    let cql = require_service!(CQL);
    let mut s = settings(cql);
    s.keyspace = "bad-name".into();
    let err = connect(&s).await.expect_err("refused").to_string();
    assert_eq!(
        err,
        "cql setting `keyspace`: \"bad-name\" must be 1 to 48 of a-z, 0-9 and '_', starting with a letter"
    );
}
