//! The sql connector against the real PostgreSQL of `scripts/services` (scram-sha-256 on
//! 127.0.0.1): statements with parameters, typed rows, rows affected, and each error
//! class — a syntax error, a constraint violation, a wrong password, nothing listening,
//! the outbound guard, a type without a JSON form, the step's timeout, a missing secret.
//! No outcome may carry the password.
//!
//! Needs `AIQ_PG_URL` (`scripts/services env`); without it the tests skip, unless `CI` or
//! `AIQ_REQUIRE_SERVICES=1` is set.

// Helpers outside #[test] functions unwrap too: a test failing on one is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use aiq_connectors::{ConnectorSettings, Connectors, OutboundSettings};
use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome};
use serde_json::{Value, json};

const WRONG_PASSWORD: &str = "Wr0ng-pg-Passw0rd-7731";

fn with_password(url: &str, password: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_password(Some(password)).unwrap();
    u.to_string()
}

fn with_port(url: &str, port: u16) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_port(Some(port)).unwrap();
    u.to_string()
}

/// The connector table; `allow` opens the outbound guard. Tenant `acme` has the server's
/// URL as `pg`, the same with a wrong password as `pg-wrong`, with a port nothing listens
/// on as `pg-down`, and a Unix-socket URL as `pg-unix`.
fn connectors(url: &str, allow: &[&str]) -> Connectors {
    let unix = format!("postgres://aiq:{WRONG_PASSWORD}@%2Fvar%2Frun%2Fpostgresql/aiq");
    let wrong = with_password(url, WRONG_PASSWORD);
    let down = with_port(url, 1);
    Connectors::builtin(
        &ConnectorSettings {
            outbound: OutboundSettings {
                allow: allow.iter().map(|a| (*a).to_owned()).collect(),
            },
            ..Default::default()
        },
        common::store(&[
            ("acme", "pg", url),
            ("acme", "pg-wrong", &wrong),
            ("acme", "pg-down", &down),
            ("acme", "pg-unix", &unix),
        ]),
        None,
        &prometheus::Registry::new(),
    )
    .unwrap()
}

const LOOPBACK: &[&str] = &["127.0.0.0/8"];

fn task(args: Value, timeout_ms: u64) -> TaskMessage {
    common::task("acme", "sql", args, timeout_ms)
}

/// No outcome may carry a secret: not the URL, not the password alone (the table only
/// scrubs whole resolved values, so a password on its own is the connector's business),
/// and nothing the scrubbing had to catch.
fn assert_no_secret(url: &str, text: &str) {
    assert!(!text.contains(WRONG_PASSWORD), "{text}");
    assert!(!text.contains(url), "{text}");
    assert!(!text.contains("[redacted]"), "{text}");
    let u = url::Url::parse(url).unwrap();
    if let Some(pw) = u.password()
        && pw.len() >= 4
        && pw != u.username()
    {
        assert!(!text.contains(pw), "{text}");
    }
}

async fn ok(c: &Connectors, url: &str, args: Value) -> Value {
    match c.call(&task(args.clone(), 10_000)).await {
        TaskOutcome::Ok { output } => {
            assert_no_secret(url, &output.to_string());
            output
        }
        other => panic!("{args}: {other:?}"),
    }
}

async fn err(c: &Connectors, url: &str, args: Value, timeout_ms: u64) -> (ErrorClass, String) {
    match c.call(&task(args.clone(), timeout_ms)).await {
        TaskOutcome::Error { class, message } => {
            assert_no_secret(url, &message);
            (class, message)
        }
        other => panic!("{args} should fail: {other:?}"),
    }
}

/// A table name of this run's own.
fn table() -> String {
    aiq_testkit::unique("aiq_sql_test")
}

#[tokio::test]
async fn statements_with_parameters_answer_typed_rows_and_rows_affected() {
    let url = aiq_testkit::require_service!(aiq_testkit::PG);
    let c = connectors(&url, LOOPBACK);
    let t = table();
    let q = |query: String, params: Value| json!({"connection_secret": "pg", "query": query, "params": params});

    let created = ok(
        &c,
        &url,
        q(
            format!(
                "create table {t} (id int primary key, name text not null, ok bool, doc jsonb, \
                 at timestamptz, note text, amount numeric(10,2))"
            ),
            json!([]),
        ),
    )
    .await;
    assert_eq!(
        created,
        json!({"rows": [], "row_count": 0, "rows_affected": 0})
    );

    // A null goes into a bool and a text column alike: it is bound without a type.
    let inserted = ok(
        &c,
        &url,
        q(
            format!(
                "insert into {t} (id, name, ok, doc, at, note, amount) values \
                 ($1, $2, $3, $4, $5::timestamptz, $6, $7::numeric), \
                 ($8, $9, $10, $11, now(), 'second', 0)"
            ),
            json!([
                1, "ann", true, {"k": [1, 2], "s": "x"}, "2024-05-06T07:08:09.5Z", null, "12.50",
                2, "bob", null, [1, "two"]
            ]),
        ),
    )
    .await;
    assert_eq!(inserted["rows_affected"], json!(2), "{inserted}");
    assert_eq!(inserted["row_count"], json!(0), "{inserted}");

    let selected = ok(
        &c,
        &url,
        q(
            format!(
                "select id, name, ok, doc, at, note, amount::text as amount_text, \
                 amount::float8 as amount_f from {t} where id >= $1 and name <> $2 order by id"
            ),
            json!([1, "zed"]),
        ),
    )
    .await;
    assert_eq!(selected["row_count"], json!(2), "{selected}");
    assert_eq!(
        selected["rows"][0],
        json!({
            "id": 1,
            "name": "ann",
            "ok": true,
            "doc": {"k": [1, 2], "s": "x"},
            "at": "2024-05-06T07:08:09.500Z",
            "note": null,
            "amount_text": "12.50",
            "amount_f": 12.5,
        })
    );
    assert_eq!(selected["rows"][1]["ok"], Value::Null);
    assert_eq!(selected["rows"][1]["doc"], json!([1, "two"]));
    assert_eq!(selected["rows"][1]["note"], json!("second"));
    assert!(selected["rows"][1]["at"].as_str().unwrap().ends_with('Z'));

    // One execution answers both the rows and the count of rows changed.
    let updated = ok(
        &c,
        &url,
        q(
            format!("update {t} set note = $1 where id in (1, 2) returning id"),
            json!(["seen"]),
        ),
    )
    .await;
    assert_eq!(updated["rows_affected"], json!(2), "{updated}");
    assert_eq!(updated["row_count"], json!(2), "{updated}");

    // The other column types with a JSON form.
    let kinds = ok(
        &c,
        &url,
        q(
            "select 1::int2 as a, 2::int8 as b, 1.5::float4 as c, 'x'::varchar as d, \
             'ab'::char(3) as e, 'n'::name as f, '{\"a\": 1}'::json as g, \
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid as h, \
             '2024-01-02 03:04:05.25'::timestamp as i, '2024-01-02'::date as j, \
             '\\x0102ff'::bytea as k, 'NaN'::float8 as l, null::int4 as m"
                .into(),
            json!([]),
        ),
    )
    .await;
    assert_eq!(
        kinds["rows"][0],
        json!({
            "a": 1, "b": 2, "c": 1.5, "d": "x", "e": "ab ", "f": "n", "g": {"a": 1},
            "h": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "i": "2024-01-02T03:04:05.250",
            "j": "2024-01-02", "k": {"base64": "AQL/"}, "l": "NaN", "m": null,
        })
    );

    // The same statement with parameters of other JSON types each time: the driver's
    // prepared-statement cache must not read 1.5 in the types of the first call.
    for (param, want) in [
        (json!(5), json!(5.0)),
        (json!(1.5), json!(1.5)),
        (json!("2.25"), json!(2.25)),
        (json!(null), Value::Null),
    ] {
        let out = ok(
            &c,
            &url,
            q("select $1::float8 as v".into(), json!([param.clone()])),
        )
        .await;
        assert_eq!(out["rows"][0]["v"], want, "{param}");
    }

    // max_rows.
    let series = |max: Option<u64>| {
        let mut a = q("select generate_series(1, 5) as n".into(), json!([]));
        if let Some(m) = max {
            a["max_rows"] = json!(m);
        }
        a
    };
    assert_eq!(ok(&c, &url, series(None)).await["row_count"], json!(5));
    let (class, message) = err(&c, &url, series(Some(3)), 10_000).await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(message.contains("more than 3 rows"), "{message}");
    let (class, message) = err(&c, &url, series(Some(1_000_000)), 10_000).await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(message.contains("connectors.sql_max_rows"), "{message}");
    // The connection cut off mid-answer is not reused half-read.
    assert_eq!(ok(&c, &url, series(None)).await["row_count"], json!(5));

    // A type without a JSON form names the column and a cast.
    let (class, message) = err(&c, &url, q("select 1.5::numeric".into(), json!([])), 10_000).await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(
        message.contains("NUMERIC") && message.contains("::text") && message.contains("::float8"),
        "{message}"
    );
    let (class, message) = err(
        &c,
        &url,
        q(format!("select amount from {t} where id = $1"), json!([1])),
        10_000,
    )
    .await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(
        message.contains("column `amount` has type NUMERIC")
            && message.contains("`amount::text AS amount` (exact) or `amount::float8 AS amount`"),
        "{message}"
    );

    // Syntax error, constraint violation, several statements, a parameter missing,
    // transaction control, a parameter out of range: all fatal.
    let (class, message) = err(&c, &url, q("selec 1".into(), json!([])), 10_000).await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(message.starts_with("sql connector: 42601 "), "{message}");
    let (class, message) = err(
        &c,
        &url,
        q(
            format!("insert into {t} (id, name) values ($1, $2)"),
            json!([1, "again"]),
        ),
        10_000,
    )
    .await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(
        message.starts_with("sql connector: 23505 duplicate key value"),
        "{message}"
    );
    let (class, message) = err(&c, &url, q("select 1; select 2".into(), json!([])), 10_000).await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(message.contains("42601"), "{message}");
    let (class, message) = err(
        &c,
        &url,
        q("select $1::int + $2::int as s".into(), json!([1])),
        10_000,
    )
    .await;
    assert_eq!(class, ErrorClass::Fatal, "{message}");
    let (class, message) = err(&c, &url, q(" -- open one\nBEGIN".into(), json!([])), 10_000).await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(message.contains("BEGIN is not allowed"), "{message}");
    let (class, message) = err(
        &c,
        &url,
        q("select $1 as v".into(), json!([u64::MAX])),
        10_000,
    )
    .await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(message.contains("`args.params[0]`"), "{message}");
    let (class, message) = err(
        &c,
        &url,
        json!({"connection_secret": "pg", "query": "select 1", "rows": 1}),
        10_000,
    )
    .await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(message.contains("unknown field `rows`"), "{message}");

    ok(&c, &url, q(format!("drop table {t}"), json!([]))).await;
}

#[tokio::test]
async fn failures_are_classed_and_never_show_the_password() {
    let url = aiq_testkit::require_service!(aiq_testkit::PG);
    let c = connectors(&url, LOOPBACK);
    let run = |secret: &str, query: &str| json!({"connection_secret": secret, "query": query});

    let (class, message) = err(&c, &url, run("pg-wrong", "select 1"), 10_000).await;
    assert_eq!(class, ErrorClass::Fatal, "{message}");
    assert!(message.contains("28P01"), "{message}");

    let (class, message) = err(&c, &url, run("pg-down", "select 1"), 10_000).await;
    assert_eq!(class, ErrorClass::Retryable, "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");

    let (class, message) = err(&c, &url, run("pg-nope", "select 1"), 10_000).await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(
        message.contains("args.connection_secret") && message.contains("pg-nope"),
        "{message}"
    );

    let (class, message) = err(&c, &url, run("pg-unix", "select 1"), 10_000).await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(message.contains("Unix-domain sockets"), "{message}");

    // The deadline stops the statement, on the server too.
    let started = Instant::now();
    let (class, message) = err(&c, &url, run("pg", "select pg_sleep(5)"), 500).await;
    assert_eq!(class, ErrorClass::Timeout, "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // And the pool is not left holding a busy connection: more calls than it has
    // connections go through at once.
    let started = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            let t = task(run("pg", "select 1 as one"), 3_000);
            tokio::spawn(async move { c.call(&t).await })
        })
        .collect();
    for call in calls {
        let outcome = call.await.unwrap();
        assert_eq!(
            outcome,
            TaskOutcome::Ok {
                output: json!({"rows": [{"one": 1}], "row_count": 1, "rows_affected": 1})
            }
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_default_outbound_guard_refuses_loopback() {
    let url = aiq_testkit::require_service!(aiq_testkit::PG);
    let c = connectors(&url, &[]);
    let (class, message) = err(
        &c,
        &url,
        json!({"connection_secret": "pg", "query": "select 1"}),
        10_000,
    )
    .await;
    assert_eq!(class, ErrorClass::Fatal);
    assert!(
        message.starts_with("sql connector: refused to connect to 127.0.0.1"),
        "{message}"
    );
}
