//! Replaying the topics from the start with a new consumer group rewrites exactly the
//! same rows, cells and write timestamps, and the same Parquet files.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use aiq_topics::{
    AuditAction, AuditEvent, ErrorClass, Event, Failure, RunEvent, RunId, RunStatus, StepEvent,
    StepId, StepStatus, TenantId, TriggerSource, WorkflowId,
};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

const TENANTS: [&str; 6] = ["acme", "tshort", "beta", "gamma", "delta", "omega"];
const RUNS: usize = 700;
const AUDITS: usize = 150;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

/// Deterministic runs: running, a step started and finished, and (for most) an end.
fn history() -> (Vec<Event>, Vec<AuditEvent>) {
    let base = 1_780_000_000_000_i64;
    let mut events = Vec::new();
    for i in 0..RUNS {
        let tenant = TenantId::new(TENANTS[i % TENANTS.len()]).unwrap();
        let workflow = WorkflowId::new(format!("wf-{}", i % 7)).unwrap();
        let run = RunId::from_idempotency_key(&tenant, &workflow, &i.to_string());
        let started = at(base + i as i64 * 997);
        let ended = at(base + i as i64 * 997 + 1500 + (i as i64 % 13));
        let run_event = |status, when, started_at| RunEvent {
            tenant: tenant.clone(),
            run,
            workflow: workflow.clone(),
            version: 1 + (i % 3) as u32,
            status,
            at: when,
            input: (status == RunStatus::Running).then(|| json!({"i": i})),
            output: (status == RunStatus::Succeeded).then(|| json!({"done": i})),
            error: (status == RunStatus::Failed).then(|| Failure {
                class: ErrorClass::Fatal,
                message: format!("boom {i}"),
                step: Some(StepId::new("s").unwrap()),
            }),
            started_at,
            source: (status == RunStatus::Running).then_some(TriggerSource::Webhook),
            scheduled_at: None,
        };
        let step = |status, when, attempt| StepEvent {
            tenant: tenant.clone(),
            run,
            step: StepId::new("s").unwrap(),
            attempt,
            status,
            at: when,
            kind: "task".into(),
            connector: Some("http".into()),
            error: None,
            iteration: (i % 5 == 0).then_some(i as u64 % 3),
            duration_ms: (status != StepStatus::Started).then_some(100 + i as u64),
            output_bytes: (status == StepStatus::Succeeded).then_some(i as u64),
        };
        events.push(Event::Run(run_event(RunStatus::Running, started, None)));
        events.push(Event::Step(step(
            StepStatus::Started,
            at(base + i as i64 * 997 + 10),
            1,
        )));
        let outcome = if i % 4 == 0 {
            StepStatus::Failed
        } else {
            StepStatus::Succeeded
        };
        events.push(Event::Step(step(
            outcome,
            at(base + i as i64 * 997 + 900),
            1,
        )));
        // One run in ten is still running.
        if i % 10 != 9 {
            let status = if i % 4 == 0 {
                RunStatus::Failed
            } else {
                RunStatus::Succeeded
            };
            events.push(Event::Run(run_event(status, ended, Some(started))));
        }
    }
    let audits = (0..AUDITS)
        .map(|i| AuditEvent {
            id: Uuid::from_u128(i as u128 + 1),
            tenant: TenantId::new(TENANTS[i % TENANTS.len()]).unwrap(),
            at: at(base + i as i64 * 60_000),
            actor: format!("key-{}", i % 4),
            action: AuditAction::SecretPut,
            subject: format!("secret-{i}"),
            detail: if i % 2 == 0 {
                json!({"n": i})
            } else {
                serde_json::Value::Null
            },
            actor_tenant: None,
            request_id: None,
            outcome: None,
        })
        .collect();
    (events, audits)
}

async fn snapshot(env: &common::Env) -> Vec<Vec<String>> {
    vec![
        env.rows(
            "SELECT tenant, run_id, workflow, version, status, trigger_source, scheduled_at, \
             started_at, finished_at, duration_ms, input, output, error_class, error_step, error, \
             WRITETIME(status), WRITETIME(workflow), WRITETIME(input) FROM {ks}.runs",
        )
        .await,
        env.rows(
            "SELECT tenant, day, started_at, run_id, workflow, version, status, trigger_source, \
             finished_at, duration_ms, WRITETIME(status) FROM {ks}.runs_by_day",
        )
        .await,
        env.rows(
            "SELECT tenant, run_id, step, iteration, attempt, kind, status, connector, started_at, \
             finished_at, duration_ms, output_bytes, error_class, error, WRITETIME(status), \
             WRITETIME(started_at) FROM {ks}.steps",
        )
        .await,
        env.rows(
            "SELECT tenant, day, at, event_id, actor, action, subject, detail, WRITETIME(actor) \
             FROM {ks}.audit",
        )
        .await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_the_start_rewrites_identical_rows_timestamps_and_files() {
    let Some(env) = common::env("sinkreplay", 4).await else {
        return;
    };
    let (events, audits) = history();
    let clock = std::time::Instant::now();
    env.events(&events).await;
    for a in &audits {
        env.audit(a).await;
    }
    println!(
        "produced {} events and {} audit records in {:?}",
        events.len(),
        audits.len(),
        clock.elapsed()
    );

    let mut first = None;
    for (round, group) in ["sink", "replay-1", "replay-2"].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let sink = env
            .start(env.settings(group, dir.path()), env.session.clone())
            .await;
        let took = env.wait_drained(group, Duration::from_secs(300)).await;
        sink.shutdown().await.unwrap();
        let rows = snapshot(&env).await;
        let files = common::parquet_files(dir.path());
        println!(
            "round {round} ({group}): drained in {took:?}; rows runs={} runs_by_day={} steps={} audit={}; {} parquet files, {} rows",
            rows[0].len(),
            rows[1].len(),
            rows[2].len(),
            rows[3].len(),
            files.len(),
            files.iter().map(|f| f.1).sum::<i64>()
        );
        match &first {
            None => {
                assert_eq!(rows[0].len(), RUNS);
                assert_eq!(rows[1].len(), RUNS);
                let step_rows = RUNS; // one attempt of one step per run
                assert_eq!(rows[2].len(), step_rows);
                assert_eq!(rows[3].len(), AUDITS);
                first = Some((rows, files));
            }
            Some((rows0, files0)) => {
                for (t, (a, b)) in rows0.iter().zip(&rows).enumerate() {
                    assert_eq!(a.len(), b.len(), "table {t}");
                    for (x, y) in a.iter().zip(b) {
                        assert_eq!(x, y, "table {t} differs after replay {round}");
                    }
                }
                assert_eq!(files0, &files, "parquet files differ after replay {round}");
            }
        }
    }

    // The write timestamp is the event's: a finished run's status carries its end's
    // microseconds plus the terminal rank.
    let tenant = TenantId::new("acme").unwrap();
    let workflow = WorkflowId::new("wf-0").unwrap();
    let run = RunId::from_idempotency_key(&tenant, &workflow, "0");
    let (wt,): (Option<i64>,) = env
        .session
        .query_unpaged(
            format!(
                "SELECT WRITETIME(status) FROM {}.runs WHERE tenant = 'acme' AND run_id = ?",
                env.cql.keyspace
            ),
            (run.as_uuid(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    let ended = at(1_780_000_000_000 + 1500);
    assert_eq!(wt, Some(ended.timestamp_micros() + 1));
}
