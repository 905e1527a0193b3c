//! Events written through the real sink into a real Cassandra, read back column by
//! column, with each row's TTL checked against its tenant's retention class.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use aiq_topics::{
    AuditAction, AuditEvent, ErrorClass, Event, Failure, RunEvent, RunId, RunStatus, StepEvent,
    StepId, StepStatus, TenantId, TriggerSource, WorkflowId,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use uuid::Uuid;

const DAY: i64 = 86_400;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn run_event(tenant: &str, run: RunId, status: RunStatus, when: DateTime<Utc>) -> RunEvent {
    RunEvent {
        tenant: TenantId::new(tenant).unwrap(),
        run,
        workflow: WorkflowId::new("order-sync").unwrap(),
        version: 2,
        status,
        at: when,
        input: None,
        output: None,
        error: None,
        started_at: None,
        source: None,
        scheduled_at: None,
    }
}

fn step_event(
    tenant: &str,
    run: RunId,
    step: &str,
    attempt: u32,
    status: StepStatus,
    when: DateTime<Utc>,
) -> StepEvent {
    StepEvent {
        tenant: TenantId::new(tenant).unwrap(),
        run,
        step: StepId::new(step).unwrap(),
        attempt,
        status,
        at: when,
        kind: "task".into(),
        connector: Some("http".into()),
        error: None,
        iteration: None,
        duration_ms: None,
        output_bytes: None,
    }
}

type RunRow = (
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
);

type StepRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i32>,
);

type DayRow = (
    String,
    NaiveDate,
    DateTime<Utc>,
    Uuid,
    Option<String>,
    Option<i64>,
    Option<i32>,
);

type AuditRow = (
    String,
    NaiveDate,
    DateTime<Utc>,
    Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<i32>,
);

/// The TTL left is the class's seconds minus the few the test took.
fn assert_ttl(ttl: Option<i32>, days: i32, what: &str) {
    let ttl = ttl.unwrap_or_else(|| panic!("{what}: no TTL"));
    let full = days * 86_400;
    assert!(
        ttl <= full && ttl > full - 600,
        "{what}: TTL {ttl}, expected ~{full}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_kind_lands_in_its_columns_with_its_retention() {
    let Some(env) = common::env("sinkstore", 3).await else {
        return;
    };
    let t0 = 1_780_000_000_000_i64;
    let acme = TenantId::new("acme").unwrap();
    let wf = WorkflowId::new("order-sync").unwrap();
    let run_a = RunId::from_idempotency_key(&acme, &wf, "a");
    let run_b = RunId::from_uuid(Uuid::from_u128(0xb));
    let run_c = RunId::from_uuid(Uuid::from_u128(0xc));
    let run_d = RunId::from_uuid(Uuid::from_u128(0xd));

    // Run A (acme, class long): a task retried once, a foreach item, a wait, success.
    let mut a_running = run_event("acme", run_a, RunStatus::Running, at(t0));
    a_running.input = Some(json!({"order": 7}));
    a_running.source = Some(TriggerSource::Api);
    let mut events = vec![Event::Run(a_running)];
    events.push(Event::Step(step_event(
        "acme",
        run_a,
        "fetch",
        1,
        StepStatus::Started,
        at(t0 + 1000),
    )));
    let mut retrying = step_event(
        "acme",
        run_a,
        "fetch",
        1,
        StepStatus::Retrying,
        at(t0 + 2000),
    );
    retrying.error = Some(Failure {
        class: ErrorClass::Retryable,
        message: "503 from shop".into(),
        step: None,
    });
    retrying.duration_ms = Some(900);
    events.push(Event::Step(retrying));
    events.push(Event::Step(step_event(
        "acme",
        run_a,
        "fetch",
        2,
        StepStatus::Started,
        at(t0 + 3000),
    )));
    let mut ok = step_event(
        "acme",
        run_a,
        "fetch",
        2,
        StepStatus::Succeeded,
        at(t0 + 4000),
    );
    ok.duration_ms = Some(800);
    ok.output_bytes = Some(42);
    events.push(Event::Step(ok));
    let mut item = step_event("acme", run_a, "each", 1, StepStatus::Started, at(t0 + 5000));
    item.iteration = Some(3);
    item.kind = "task".into();
    events.push(Event::Step(item.clone()));
    item.status = StepStatus::Succeeded;
    item.at = at(t0 + 5500);
    item.output_bytes = Some(5);
    events.push(Event::Step(item));
    let mut pause = step_event(
        "acme",
        run_a,
        "pause",
        1,
        StepStatus::Started,
        at(t0 + 6000),
    );
    pause.kind = "wait".into();
    pause.connector = None;
    events.push(Event::Step(pause.clone()));
    pause.status = StepStatus::Waiting;
    pause.at = at(t0 + 6001);
    events.push(Event::Step(pause));
    let mut a_done = run_event("acme", run_a, RunStatus::Succeeded, at(t0 + 10_000));
    a_done.started_at = Some(at(t0));
    a_done.output = Some(json!({"ok": true}));
    events.push(Event::Run(a_done));

    // Run B (beta, default class): a cron run whose step failed for good.
    // It starts a second before midnight...
    let t1 = (t0 / (DAY * 1000) + 2) * DAY * 1000 - 1000;
    let mut b_running = run_event("beta", run_b, RunStatus::Running, at(t1));
    b_running.source = Some(TriggerSource::Cron);
    b_running.scheduled_at = Some(at(t1 - 2000));
    events.push(Event::Run(b_running));
    events.push(Event::Step(step_event(
        "beta",
        run_b,
        "call",
        1,
        StepStatus::Started,
        at(t1 + 10),
    )));
    let mut failed = step_event("beta", run_b, "call", 1, StepStatus::Failed, at(t1 + 20));
    failed.error = Some(Failure {
        class: ErrorClass::Fatal,
        message: "400 bad order".into(),
        step: None,
    });
    events.push(Event::Step(failed));
    let mut b_done = run_event("beta", run_b, RunStatus::Failed, at(t1 + 3000)); // ...ends after
    b_done.started_at = Some(at(t1));
    b_done.error = Some(Failure {
        class: ErrorClass::Fatal,
        message: "400 bad order".into(),
        step: Some(StepId::new("call").unwrap()),
    });
    events.push(Event::Run(b_done));

    // Run C (tshort, class short): cancelled while queued, never started.
    events.push(Event::Run(run_event(
        "tshort",
        run_c,
        RunStatus::Cancelled,
        at(t0 + 7000),
    )));

    // Run D (beta): cancelled in the very microsecond it started, and the cancellation
    // is read first: the rank of the write timestamp keeps `cancelled` (which sorts
    // before `running` as text) as the status.
    let mut d_done = run_event("beta", run_d, RunStatus::Cancelled, at(t0 + 8000));
    d_done.started_at = Some(at(t0 + 8000));
    events.push(Event::Run(d_done));
    events.push(Event::Run(run_event(
        "beta",
        run_d,
        RunStatus::Running,
        at(t0 + 8000),
    )));

    for e in &events {
        env.event(e).await;
    }
    // A record that is not an event is counted and passed over, not fatal.
    env.raw_event("beta", b"{not json").await;
    let audit = AuditEvent {
        id: Uuid::from_u128(0xa0d17),
        tenant: acme.clone(),
        at: at(t0 + 500),
        actor: "key-1".into(),
        action: AuditAction::WorkflowRegistered,
        subject: "order-sync/2".into(),
        detail: json!({"hash": "abc"}),
        actor_tenant: None,
        request_id: None,
        outcome: None,
    };
    env.audit(&audit).await;

    let dir = tempfile::tempdir().unwrap();
    let sink = env
        .start(env.settings("sink", dir.path()), env.session.clone())
        .await;
    let took = env.wait_drained("sink", Duration::from_secs(120)).await;
    println!("drained {} records in {took:?}", events.len() + 2);
    assert!(!sink.is_finished());
    sink.shutdown().await.unwrap();

    let ks = &env.cql.keyspace;
    let run_q = format!(
        "SELECT workflow, version, status, trigger_source, scheduled_at, started_at, \
         finished_at, duration_ms, input, output, error_class, error_step, error, TTL(status) \
         FROM {ks}.runs WHERE tenant = ? AND run_id = ?"
    );
    let run_row = |tenant: &'static str, run: RunId| {
        let q = run_q.clone();
        let session = env.session.clone();
        async move {
            session
                .query_unpaged(q, (tenant, run.as_uuid()))
                .await
                .unwrap()
                .into_rows_result()
                .unwrap()
                .single_row::<RunRow>()
                .unwrap()
        }
    };

    let a = run_row("acme", run_a).await;
    assert_eq!(a.0.as_deref(), Some("order-sync"));
    assert_eq!(a.1, Some(2));
    assert_eq!(a.2.as_deref(), Some("succeeded"));
    assert_eq!(a.3.as_deref(), Some("api"));
    assert_eq!(a.4, None);
    assert_eq!(a.5, Some(at(t0)));
    assert_eq!(a.6, Some(at(t0 + 10_000)));
    assert_eq!(a.7, Some(10_000));
    assert_eq!(a.8.as_deref(), Some(r#"{"order":7}"#));
    assert_eq!(a.9.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!((a.10, a.11, a.12), (None, None, None));
    assert_ttl(a.13, 400, "acme run");

    let b = run_row("beta", run_b).await;
    assert_eq!(b.2.as_deref(), Some("failed"));
    assert_eq!(b.3.as_deref(), Some("cron"));
    assert_eq!(b.4, Some(at(t1 - 2000)));
    assert_eq!(b.5, Some(at(t1)));
    assert_eq!(b.6, Some(at(t1 + 3000)));
    assert_eq!(b.7, Some(3000));
    assert_eq!(b.8, None);
    assert_eq!(b.10.as_deref(), Some("fatal"));
    assert_eq!(b.11.as_deref(), Some("call"));
    assert_eq!(b.12.as_deref(), Some("400 bad order"));
    assert_ttl(b.13, 90, "beta run");

    let c = run_row("tshort", run_c).await;
    assert_eq!(c.2.as_deref(), Some("cancelled"));
    assert_eq!((c.3.as_deref(), c.5, c.7), (None, None, None));
    assert_eq!(c.6, Some(at(t0 + 7000)));
    assert_ttl(c.13, 7, "tshort run");

    let d = run_row("beta", run_d).await;
    assert_eq!(
        d.2.as_deref(),
        Some("cancelled"),
        "the later state wins a tie"
    );
    assert_eq!(d.7, Some(0));

    // runs_by_day: the day a run started, even when it finished the next day.
    let by_day = env
        .rows(
            "SELECT tenant, day, started_at, run_id, workflow, version, status, trigger_source, \
             finished_at, duration_ms FROM {ks}.runs_by_day",
        )
        .await;
    assert_eq!(by_day.len(), 3, "{by_day:#?}");
    let day_rows: Vec<DayRow> = env
        .select(
            format!(
                "SELECT tenant, day, started_at, run_id, status, duration_ms, TTL(status) \
                 FROM {ks}.runs_by_day"
            ),
            (),
        )
        .await;
    let find = |run: RunId| day_rows.iter().find(|r| r.3 == run.as_uuid()).unwrap();
    let ra = find(run_a);
    assert_eq!(
        (ra.0.as_str(), ra.1, ra.2),
        ("acme", at(t0).date_naive(), at(t0))
    );
    assert_eq!((ra.4.as_deref(), ra.5), (Some("succeeded"), Some(10_000)));
    assert_ttl(ra.6, 400, "acme runs_by_day");
    let rb = find(run_b);
    assert_eq!(rb.1, at(t1).date_naive());
    assert_ne!(
        rb.1,
        at(t1 + 3000).date_naive(),
        "the test's run crosses midnight"
    );
    assert_eq!((rb.4.as_deref(), rb.5), (Some("failed"), Some(3000)));
    assert_ttl(rb.6, 90, "beta runs_by_day");
    assert_eq!(find(run_d).4.as_deref(), Some("cancelled"));
    assert!(
        day_rows.iter().all(|r| r.3 != run_c.as_uuid()),
        "a queued cancel has no day entry"
    );

    // steps
    let step_row = |run: RunId, step: &'static str, iteration: i64, attempt: i32| {
        let session = env.session.clone();
        let q = format!(
            "SELECT kind, status, connector, started_at, finished_at, duration_ms, output_bytes, \
             error_class, error, TTL(status) FROM {ks}.steps WHERE tenant = ? AND run_id = ? \
             AND step = ? AND iteration = ? AND attempt = ?"
        );
        let tenant = if run == run_a { "acme" } else { "beta" };
        async move {
            session
                .query_unpaged(q, (tenant, run.as_uuid(), step, iteration, attempt))
                .await
                .unwrap()
                .into_rows_result()
                .unwrap()
                .single_row::<StepRow>()
                .unwrap()
        }
    };
    let f1 = step_row(run_a, "fetch", -1, 1).await;
    assert_eq!(f1.0.as_deref(), Some("task"));
    assert_eq!(f1.1.as_deref(), Some("retrying"));
    assert_eq!(f1.2.as_deref(), Some("http"));
    assert_eq!((f1.3, f1.4), (Some(at(t0 + 1000)), Some(at(t0 + 2000))));
    assert_eq!((f1.5, f1.6), (Some(900), None));
    assert_eq!(f1.7.as_deref(), Some("retryable"));
    assert_eq!(f1.8.as_deref(), Some("503 from shop"));
    assert_ttl(f1.9, 400, "acme step");
    let f2 = step_row(run_a, "fetch", -1, 2).await;
    assert_eq!(f2.1.as_deref(), Some("succeeded"));
    assert_eq!((f2.3, f2.4), (Some(at(t0 + 3000)), Some(at(t0 + 4000))));
    assert_eq!((f2.5, f2.6, f2.7, f2.8), (Some(800), Some(42), None, None));
    let each = step_row(run_a, "each", 3, 1).await;
    assert_eq!(each.1.as_deref(), Some("succeeded"));
    assert_eq!(
        (each.3, each.4, each.6),
        (Some(at(t0 + 5000)), Some(at(t0 + 5500)), Some(5))
    );
    let pause = step_row(run_a, "pause", -1, 1).await;
    assert_eq!(pause.0.as_deref(), Some("wait"));
    assert_eq!(pause.1.as_deref(), Some("waiting"));
    assert_eq!(
        (pause.2.as_deref(), pause.3, pause.4),
        (None, Some(at(t0 + 6000)), None)
    );
    let call = step_row(run_b, "call", -1, 1).await;
    assert_eq!(call.1.as_deref(), Some("failed"));
    assert_eq!(call.7.as_deref(), Some("fatal"));
    assert_eq!(call.8.as_deref(), Some("400 bad order"));
    assert_ttl(call.9, 90, "beta step");
    let all_steps = env
        .rows("SELECT tenant, run_id, step, iteration, attempt FROM {ks}.steps")
        .await;
    assert_eq!(all_steps.len(), 5, "{all_steps:#?}");

    // audit
    let audit_rows: Vec<AuditRow> = env
        .select(
            format!(
                "SELECT tenant, day, at, event_id, actor, action, subject, detail, TTL(actor) \
                 FROM {ks}.audit"
            ),
            (),
        )
        .await;
    assert_eq!(audit_rows.len(), 1);
    let r = &audit_rows[0];
    assert_eq!(
        (r.0.as_str(), r.1, r.2, r.3),
        ("acme", at(t0 + 500).date_naive(), at(t0 + 500), audit.id)
    );
    assert_eq!(
        (r.4.as_str(), r.5.as_str(), r.6.as_str()),
        ("key-1", "workflow_registered", "order-sync/2")
    );
    assert_eq!(r.7.as_deref(), Some(r#"{"hash":"abc"}"#));
    assert_ttl(r.8, 400, "acme audit");
}

type WorkflowRow = (Uuid, Option<String>, Option<i64>, Option<i32>);

/// The keys of `table` (a status index), as `(status, run_id)` in `tenant`.
/// The sink's store over the test's keyspace, with metrics of its own.
async fn store(env: &common::Env) -> (aiq_sink::Store, std::sync::Arc<aiq_sink::metrics::Metrics>) {
    let store = aiq_sink::Store::new(env.session.clone(), &env.cql.keyspace)
        .await
        .unwrap();
    let metrics = aiq_sink::metrics::Metrics::new(&prometheus::Registry::new());
    (store, std::sync::Arc::new(metrics))
}

async fn listed(env: &common::Env, table: &str, tenant: &str) -> Vec<(String, Uuid)> {
    let ks = &env.cql.keyspace;
    let mut rows: Vec<(String, String, NaiveDate, DateTime<Utc>, Uuid)> = env
        .select(
            format!("SELECT tenant, status, day, started_at, run_id FROM {ks}.{table}"),
            (),
        )
        .await;
    rows.retain(|r| r.0 == tenant);
    let mut keys: Vec<(String, Uuid)> = rows.into_iter().map(|r| (r.1, r.4)).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_moves_the_run_between_status_indexes_and_a_replay_does_not_undo_it() {
    let Some(env) = common::env("sinkindex", 1).await else {
        return;
    };
    let (store, metrics) = store(&env).await;
    let retention = common::retention();
    let write = |events: Vec<RunEvent>| {
        let writes: Vec<_> = events
            .iter()
            .flat_map(|e| aiq_sink::store::event_writes(&Event::Run(e.clone()), &retention))
            .collect();
        let (store, metrics) = (store.clone(), metrics.clone());
        async move {
            store
                .execute(std::sync::Arc::new(writes), 8, &metrics)
                .await
                .unwrap();
        }
    };
    let t0 = 1_780_000_000_000_i64;
    let run_a = RunId::from_uuid(Uuid::from_u128(0xa));
    let run_b = RunId::from_uuid(Uuid::from_u128(0xb));
    let running_a = run_event("acme", run_a, RunStatus::Running, at(t0));
    let running_b = run_event("acme", run_b, RunStatus::Running, at(t0 + 10));
    write(vec![running_a.clone(), running_b.clone()]).await;
    let by_status = "runs_by_status_day";
    let running = |id: RunId| ("running".to_owned(), id.as_uuid());
    assert_eq!(
        listed(&env, by_status, "acme").await,
        [running(run_a), running(run_b)]
    );

    let mut failed_a = run_event("acme", run_a, RunStatus::Failed, at(t0 + 5000));
    failed_a.started_at = Some(at(t0));
    write(vec![failed_a]).await;
    let failed = ("failed".to_owned(), run_a.as_uuid());
    assert_eq!(
        listed(&env, by_status, "acme").await,
        [failed.clone(), running(run_b)],
        "the ended run left `running`"
    );
    // A replay of its `running` event writes under the terminal tombstone.
    write(vec![running_a]).await;
    assert_eq!(
        listed(&env, by_status, "acme").await,
        [failed.clone(), running(run_b)]
    );

    // The per-workflow tables follow the same keys, and runs_by_workflow_day its status.
    let ks = &env.cql.keyspace;
    let both: Vec<(String, String, Uuid)> = env
        .select(
            format!(
                "SELECT workflow, status, run_id FROM {ks}.runs_by_workflow_status_day \
                 WHERE tenant = 'acme' AND workflow = 'order-sync' AND status = 'running' \
                 AND day = ?"
            ),
            (at(t0).date_naive(),),
        )
        .await;
    assert_eq!(
        both,
        [("order-sync".into(), "running".into(), run_b.as_uuid())]
    );
    let wf: Vec<WorkflowRow> = env
        .select(
            format!(
                "SELECT run_id, status, duration_ms, TTL(status) FROM {ks}.runs_by_workflow_day \
                 WHERE tenant = 'acme' AND workflow = 'order-sync' AND day = ?"
            ),
            (at(t0).date_naive(),),
        )
        .await;
    assert_eq!(wf.len(), 2);
    let a = wf.iter().find(|r| r.0 == run_a.as_uuid()).unwrap();
    assert_eq!((a.1.as_deref(), a.2), (Some("failed"), Some(5000)));
    assert_ttl(a.3, 400, "acme runs_by_workflow_day");
    let b = wf.iter().find(|r| r.0 == run_b.as_uuid()).unwrap();
    assert_eq!(b.1.as_deref(), Some("running"));

    // The terminal event read before `running` (same microsecond): still only the
    // terminal key.
    let run_c = RunId::from_uuid(Uuid::from_u128(0xc));
    let mut cancelled_c = run_event("acme", run_c, RunStatus::Cancelled, at(t0 + 20));
    cancelled_c.started_at = Some(at(t0 + 20));
    write(vec![cancelled_c]).await;
    write(vec![run_event(
        "acme",
        run_c,
        RunStatus::Running,
        at(t0 + 20),
    )])
    .await;
    let keys = listed(&env, by_status, "acme").await;
    assert!(keys.contains(&("cancelled".to_owned(), run_c.as_uuid())));
    assert!(!keys.contains(&running(run_c)), "{keys:?}");
    assert_eq!(keys.len(), 3);
}

/// Rows of one table and partition go to the store as one unlogged batch. 150 runs of one
/// tenant and day, each started and ended in the same call, and 100 audit events of that
/// day: every listing holds every run under its final status, the audit partition every
/// event, and the store took them in far fewer requests than rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_one_partition_go_in_batches_and_land_whole() {
    let Some(env) = common::env("sinkbatch", 1).await else {
        return;
    };
    let (store, metrics) = store(&env).await;
    let retention = common::retention();
    let t0 = 1_780_000_000_000_i64;
    let mut writes = Vec::new();
    let mut runs = Vec::new();
    for i in 0..150_i64 {
        let run = RunId::from_uuid(Uuid::from_u128(0x1000 + i as u128));
        let started = at(t0 + i);
        let running = run_event("bulk", run, RunStatus::Running, started);
        let mut done = run_event("bulk", run, RunStatus::Succeeded, at(t0 + i + 50));
        done.started_at = Some(started);
        writes.extend(aiq_sink::store::event_writes(
            &Event::Run(running),
            &retention,
        ));
        writes.extend(aiq_sink::store::event_writes(&Event::Run(done), &retention));
        runs.push(run.as_uuid());
    }
    for i in 0..100_i64 {
        let event = AuditEvent {
            id: Uuid::from_u128(0xa000 + i as u128),
            tenant: TenantId::new("bulk").unwrap(),
            at: at(t0 + i),
            actor: "key-1".into(),
            action: AuditAction::ApiCall,
            subject: format!("POST /v1/call/{i}"),
            detail: json!({"i": i}),
            actor_tenant: None,
            request_id: None,
            outcome: Some("202".into()),
        };
        writes.push(aiq_sink::store::audit(&event, &retention));
    }
    let rows = writes.len() as u64;
    store
        .execute(std::sync::Arc::new(writes), 8, &metrics)
        .await
        .unwrap();

    runs.sort();
    let succeeded: Vec<(String, Uuid)> =
        runs.iter().map(|r| ("succeeded".to_owned(), *r)).collect();
    for table in ["runs_by_status_day", "runs_by_workflow_status_day"] {
        assert_eq!(listed(&env, table, "bulk").await, succeeded, "{table}");
    }
    let ks = &env.cql.keyspace;
    let day = at(t0).date_naive();
    let mut by_day: Vec<(Uuid, Option<String>, Option<i64>)> = env
        .select(
            format!(
                "SELECT run_id, status, duration_ms FROM {ks}.runs_by_day \
                 WHERE tenant = 'bulk' AND day = ?"
            ),
            (day,),
        )
        .await;
    by_day.sort();
    let want: Vec<_> = runs
        .iter()
        .map(|r| (*r, Some("succeeded".to_owned()), Some(50)))
        .collect();
    assert_eq!(by_day, want, "runs_by_day");
    let mut subjects: Vec<String> = env
        .select::<(String,)>(
            format!("SELECT subject FROM {ks}.audit WHERE tenant = 'bulk' AND day = ?"),
            (day,),
        )
        .await
        .into_iter()
        .map(|(s,)| s)
        .collect();
    subjects.sort();
    let mut want: Vec<String> = (0..100).map(|i| format!("POST /v1/call/{i}")).collect();
    want.sort();
    assert_eq!(subjects, want, "audit");

    let tables = [
        "runs",
        "runs_by_day",
        "runs_by_workflow_day",
        "runs_by_status_day",
        "runs_by_workflow_status_day",
        "steps",
        "audit",
    ];
    let written: u64 = tables
        .iter()
        .map(|t| metrics.writes.with_label_values(&[t, "ok"]).get())
        .sum();
    let requests: u64 = tables
        .iter()
        .map(|t| {
            metrics
                .write_seconds
                .with_label_values(&[t])
                .get_sample_count()
        })
        .sum();
    assert_eq!(written, rows, "every row counted once");
    assert!(
        requests * 4 < rows,
        "{rows} rows took {requests} requests: one partition's rows were not batched"
    );
}

/// A batch the store refuses says nothing of which row it refused, so its rows go again
/// one by one: only the refused row is reported (for the dead letters), none is left to
/// retry, and the other rows of its partition are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_goes_row_by_row_and_only_its_bad_row_is_refused() {
    let Some(env) = common::env("sinkrefused", 1).await else {
        return;
    };
    let (store, metrics) = store(&env).await;
    let retention = common::retention();
    let t0 = 1_780_000_000_000_i64;
    let mut writes: Vec<_> = (0..10_i64)
        .map(|i| {
            let event = AuditEvent {
                id: Uuid::from_u128(0xb000 + i as u128),
                tenant: TenantId::new("acme").unwrap(),
                at: at(t0 + i),
                actor: "key-1".into(),
                action: AuditAction::ApiCall,
                subject: format!("call {i}"),
                detail: json!({}),
                actor_tenant: None,
                request_id: None,
                outcome: None,
            };
            aiq_sink::store::audit(&event, &retention)
        })
        .collect();
    // Row 3's TTL past Cassandra's maximum (20 years): the server refuses that row, and
    // with it the batch of its partition.
    let ttl = writes[3].values.len() - 2;
    writes[3].values[ttl] =
        scylla::value::MaybeUnset::Set(scylla::value::CqlValue::Int(999_999_999));

    let failed = store
        .execute(std::sync::Arc::new(writes), 8, &metrics)
        .await
        .unwrap_err();
    assert!(failed.retry.is_empty(), "{:?}", failed.retry);
    assert!(failed.error.is_none(), "{:?}", failed.error);
    let refused: Vec<usize> = failed.refused.iter().map(|(i, _)| *i).collect();
    assert_eq!(refused, [3]);
    assert_eq!(
        failed.refused[0].1.refusal(),
        Some(aiq_sink::store::Refusal::TooLarge),
        "{}",
        failed.refused[0].1
    );
    let ks = &env.cql.keyspace;
    let mut subjects: Vec<String> = env
        .select::<(String,)>(
            format!("SELECT subject FROM {ks}.audit WHERE tenant = 'acme' AND day = ?"),
            (at(t0).date_naive(),),
        )
        .await
        .into_iter()
        .map(|(s,)| s)
        .collect();
    subjects.sort();
    let want: Vec<String> = [0, 1, 2, 4, 5, 6, 7, 8, 9]
        .iter()
        .map(|i| format!("call {i}"))
        .collect();
    assert_eq!(subjects, want);
    // One refused batch of ten, then ten rows one by one.
    let requests = metrics
        .write_seconds
        .with_label_values(&["audit"])
        .get_sample_count();
    assert_eq!(requests, 11);
}
