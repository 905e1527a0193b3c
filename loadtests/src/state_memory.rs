//! Memory per waiting run in the orchestrator's core: N runs started and left waiting for
//! a signal, measured as resident memory growth and as changelog bytes.

use std::sync::Arc;
use std::time::Instant;

use aiq_engine::Catalog;
use aiq_orchestrator::{Core, InputTopic, OrchestratorSettings, Record};
use aiq_topics::{DefinitionRecord, TenantId, TriggerEvent, TriggerSource, WorkflowId};
use chrono::{DateTime, Utc};
use serde_json::json;

pub struct Report {
    pub runs: usize,
    pub rss_bytes_per_run: f64,
    pub changelog_bytes_per_run: f64,
    pub starts_per_sec: f64,
}

/// Resident set size of this process, from /proc (Linux).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

pub fn measure(runs: usize) -> anyhow::Result<Report> {
    let tenant = TenantId::new("acme")?;
    let now: DateTime<Utc> = Utc::now();
    let catalog = Catalog::default();
    catalog.apply(DefinitionRecord {
        tenant: tenant.clone(),
        workflow: WorkflowId::new("approval")?,
        version: 1,
        content_hash: "h".into(),
        created_at: now,
        definition: json!({
            "id": "approval",
            "steps": [
                {"id": "ask", "set": {"vars": {"asked": true}}},
                {"id": "wait", "wait_for_event": {"signal": "approved", "timeout": "7d"}},
                {"id": "done", "succeed": {}}
            ]
        }),
    })?;
    let partitions = 1;
    let settings = OrchestratorSettings {
        quota: aiq_orchestrator::settings::TenantQuota {
            max_concurrent_runs: u32::MAX,
            max_inflight_tasks: u32::MAX,
            max_queued_runs: 100_000,
        },
        ..OrchestratorSettings::default()
    };
    let mut core = Core::new(Arc::new(settings), Arc::new(catalog), partitions);
    core.restore(0, Vec::new());
    let before = rss_bytes().unwrap_or(0);
    let mut changelog = 0usize;
    let started = Instant::now();
    for i in 0..runs {
        let mut t = TriggerEvent::new(
            tenant.clone(),
            WorkflowId::new("approval")?,
            TriggerSource::Api,
            json!({"order": i}),
        );
        t.idempotency_key = Some(format!("k{i}"));
        let bytes = t.encode();
        let _ = core.handle(
            Record {
                topic: InputTopic::Triggers,
                partition: 0,
                offset: i as i64,
                key: Some(b"acme"),
                payload: Some(&bytes),
            },
            now,
            true,
        );
        let _ = core.take_outputs();
        changelog += core
            .take_changelog()
            .iter()
            .map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
    }
    let elapsed = started.elapsed();
    let after = rss_bytes().unwrap_or(0);
    anyhow::ensure!(core.load()[&0].0 == runs, "not every run is waiting");
    Ok(Report {
        runs,
        rss_bytes_per_run: after.saturating_sub(before) as f64 / runs as f64,
        changelog_bytes_per_run: changelog as f64 / runs as f64,
        starts_per_sec: runs as f64 / elapsed.as_secs_f64(),
    })
}

pub struct MarkerReport {
    pub runs: usize,
    pub markers: usize,
    pub rss_bytes: u64,
    pub runs_per_sec: f64,
}

/// Memory of finished-run markers: N one-step runs that end at once, the changelog taken
/// every thousand runs as the runner's commits would, and the resident set growth.
pub fn measure_markers(runs: usize) -> anyhow::Result<MarkerReport> {
    let tenants: Vec<TenantId> = (0..100)
        .map(|i| TenantId::new(format!("t{i}")))
        .collect::<Result<_, _>>()?;
    let now: DateTime<Utc> = Utc::now();
    let catalog = Catalog::default();
    for t in &tenants {
        catalog.apply(DefinitionRecord {
            tenant: t.clone(),
            workflow: WorkflowId::new("quick")?,
            version: 1,
            content_hash: "h".into(),
            created_at: now,
            definition: json!({"id": "quick", "steps": [{"id": "s", "set": {"vars": {"x": 1}}}]}),
        })?;
    }
    let mut core = Core::new(
        Arc::new(OrchestratorSettings::default()),
        Arc::new(catalog),
        1,
    );
    core.restore(0, Vec::new());
    let before = rss_bytes().unwrap_or(0);
    let started = Instant::now();
    for i in 0..runs {
        let tenant = &tenants[i % tenants.len()];
        let t = TriggerEvent::new(
            tenant.clone(),
            WorkflowId::new("quick")?,
            TriggerSource::Api,
            json!({}),
        );
        let bytes = t.encode();
        let _ = core.handle(
            Record {
                topic: InputTopic::Triggers,
                partition: 0,
                offset: i as i64,
                key: Some(tenant.as_str().as_bytes()),
                payload: Some(&bytes),
            },
            now,
            true,
        );
        let _ = core.take_outputs();
        if i % 1_000 == 999 {
            let _ = core.take_changelog();
        }
    }
    let _ = core.take_changelog();
    let elapsed = started.elapsed();
    let after = rss_bytes().unwrap_or(0);
    anyhow::ensure!(core.load()[&0].0 == 0, "every run ended");
    Ok(MarkerReport {
        runs,
        markers: core.finished_count(),
        rss_bytes: after.saturating_sub(before),
        runs_per_sec: runs as f64 / elapsed.as_secs_f64(),
    })
}
