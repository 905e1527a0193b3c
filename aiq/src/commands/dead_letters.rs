//! `aiq dead-letters`: an operator's view of every tenant's dead letters, straight from
//! the store and Kafka (no API token needed): list, show one with its record, replay
//! (once) or resolve. The same transitions as the API's, so a letter replayed here is
//! refused there and the other way round.

use std::process::ExitCode;
use std::sync::Arc;

use aiq_ingest::dead_letters::{DeadLetters, LetterError};
use aiq_ingest::history::{HistoryStore, LetterFilter, LetterState, PLATFORM, Position, Window};
use aiq_ingest::publisher::Publisher;
use aiq_topics::{AuditAction, AuditEvent, TenantId};
use anyhow::Context;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::cli::{DeadLettersCommand, LetterSelection};
use crate::config::Config;

async fn open(config: &Config) -> anyhow::Result<(DeadLetters, Publisher)> {
    let session = Arc::new(aiq_sql::connect(&config.cql).await?);
    let history = HistoryStore::new(Arc::clone(&session), &config.cql.keyspace)
        .await
        .context("reading the dead letters (did `aiq schema apply` run?)")?;
    let publisher = Publisher::new(&config.kafka, config.ingest.ack_timeout())?;
    let letters = DeadLetters::new(session, &config.cql.keyspace, history, publisher.clone())
        .await
        .context("preparing the dead letters' statements")?;
    Ok((letters, publisher))
}

/// Who the state columns and the audit trail name.
fn operator() -> String {
    format!(
        "operator:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn all(_: Option<&str>) -> bool {
    true
}

/// Every letter the selection names, newest first, walking every page of the window.
async fn select(letters: &DeadLetters, s: &LetterSelection) -> anyhow::Result<Vec<Uuid>> {
    if !s.ids.is_empty() {
        return Ok(s.ids.clone());
    }
    let window = Window::new(s.from, s.to, Utc::now()).context("--from/--to")?;
    let filter = LetterFilter {
        kind: s.kind.clone(),
        stage: s.stage.clone(),
        state: s.state.as_deref().map(|st| LetterState::parse(Some(st))),
    };
    let under = s.tenant.as_ref().map_or(PLATFORM, TenantId::as_str);
    let mut ids = Vec::new();
    let mut after: Option<Position> = None;
    loop {
        let page = letters
            .history()
            .list_dead_letters(under, window, &filter, after, 500)
            .await?;
        ids.extend(page.items.iter().map(|l| l.id));
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(ids),
        }
    }
}

async fn audit(publisher: &Publisher, tenant: Option<&str>, action: AuditAction, id: Uuid) {
    let Some(tenant) = tenant.and_then(|t| TenantId::new(t).ok()) else {
        return;
    };
    let event = AuditEvent {
        id: Uuid::new_v4(),
        tenant,
        at: Utc::now(),
        actor: operator(),
        action,
        subject: id.to_string(),
        detail: serde_json::Value::Null,
        actor_tenant: None,
        request_id: None,
        outcome: None,
    };
    if let Err(e) = aiq_ingest::audit::publish(publisher, &event).await {
        eprintln!("aiq: audit event for {id} not published: {e}");
    }
}

/// What replaying or resolving a selection did, letter by letter.
#[derive(Default)]
struct Tally {
    done: usize,
    refused: usize,
    failed: usize,
}

impl Tally {
    /// Prints one letter's outcome; true when it was done.
    fn record(&mut self, id: Uuid, outcome: Result<String, LetterError>) -> bool {
        match outcome {
            Ok(what) => {
                self.done += 1;
                println!("{id}  {what}");
                true
            }
            // Already done, or never possible: a refusal, not a failure.
            Err(e @ (LetterError::Done { .. } | LetterError::NotReplayable { .. })) => {
                self.refused += 1;
                println!("{id}  refused: {e}");
                false
            }
            Err(e) => {
                self.failed += 1;
                println!("{id}  failed: {e}");
                false
            }
        }
    }

    /// Prints the counts; exit status 1 if any letter failed.
    fn finish(&self, verb: &str) -> ExitCode {
        eprintln!(
            "{} {verb}, {} refused, {} failed",
            self.done, self.refused, self.failed
        );
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub async fn run(config: &Config, cmd: DeadLettersCommand) -> anyhow::Result<ExitCode> {
    let (letters, publisher) = open(config).await?;
    match cmd {
        DeadLettersCommand::List(s) => {
            let window = Window::new(s.from, s.to, Utc::now()).context("--from/--to")?;
            let filter = LetterFilter {
                kind: s.kind.clone(),
                stage: s.stage.clone(),
                state: s.state.as_deref().map(|st| LetterState::parse(Some(st))),
            };
            let under = s.tenant.as_ref().map_or(PLATFORM, TenantId::as_str);
            println!(
                "{:<36}  {:<24}  {:<12}  {:<16}  {:<12}  {:<9}  reason",
                "id", "at", "tenant", "kind", "stage", "state"
            );
            let mut after = None;
            let mut count = 0usize;
            loop {
                let page = letters
                    .history()
                    .list_dead_letters(under, window, &filter, after, 500)
                    .await?;
                for l in &page.items {
                    count += 1;
                    println!(
                        "{:<36}  {:<24}  {:<12}  {:<16}  {:<12}  {:<9}  {}",
                        l.id,
                        time(l.at),
                        short(l.tenant.as_deref().unwrap_or("?"), 12),
                        l.kind,
                        l.stage,
                        l.state.as_str(),
                        short(&l.reason, 100)
                    );
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            eprintln!("{count} dead letters");
            Ok(ExitCode::SUCCESS)
        }
        DeadLettersCommand::Show { id } => {
            let l = match letters.get(id, all).await {
                Ok(l) => l,
                Err(e @ LetterError::NotFound(_)) => {
                    eprintln!("aiq: {e}");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            };
            let value = l.value.as_deref().map(|v| {
                serde_json::from_slice::<serde_json::Value>(v)
                    .map(|j| j.to_string())
                    .unwrap_or_else(|_| String::from_utf8_lossy(v).into_owned())
            });
            println!("id:        {}", l.id);
            println!("at:        {}", time(l.at));
            println!("tenant:    {}", l.tenant.as_deref().unwrap_or("(unknown)"));
            println!("kind:      {}", l.kind);
            println!("stage:     {}", l.stage);
            println!("reason:    {}", l.reason);
            println!(
                "from:      {} partition {} offset {}",
                l.topic,
                l.partition.map_or("?".into(), |p| p.to_string()),
                l.offset.map_or("?".into(), |o| o.to_string())
            );
            println!("state:     {}", l.state.as_str());
            if let (Some(at), Some(by)) = (l.state_at, &l.state_by) {
                println!("           since {} by {by}", time(at));
            }
            println!(
                "key:       {}",
                l.key
                    .as_deref()
                    .map_or("(none)".into(), |k| String::from_utf8_lossy(k).into_owned())
            );
            for (name, v) in &l.headers {
                println!(
                    "header:    {name}: {}",
                    v.as_deref()
                        .map_or("(none)".into(), |v| String::from_utf8_lossy(v).into_owned())
                );
            }
            println!(
                "value:     {}",
                value.unwrap_or_else(|| "(not kept)".into())
            );
            Ok(ExitCode::SUCCESS)
        }
        DeadLettersCommand::Replay(s) | DeadLettersCommand::Resolve(s)
            if s.ids.is_empty() && !s.all =>
        {
            anyhow::bail!("name the letters: their ids, or --all with the filters to select them")
        }
        DeadLettersCommand::Replay(s) => {
            let by = operator();
            let mut tally = Tally::default();
            for id in select(&letters, &s).await? {
                let done = letters.replay(id, &by, all).await.map(|r| {
                    format!(
                        "replayed to {} partition {} offset {}",
                        r.topic, r.partition, r.offset
                    )
                });
                if tally.record(id, done) {
                    let tenant = letters.get(id, all).await.ok().and_then(|l| l.tenant);
                    audit(
                        &publisher,
                        tenant.as_deref(),
                        AuditAction::DeadLetterReplayed,
                        id,
                    )
                    .await;
                }
            }
            Ok(tally.finish("replayed"))
        }
        DeadLettersCommand::Resolve(s) => {
            let by = operator();
            let mut tally = Tally::default();
            for id in select(&letters, &s).await? {
                let done = letters
                    .resolve(id, &by, all)
                    .await
                    .map(|()| "resolved".to_owned());
                if tally.record(id, done) {
                    let tenant = letters.get(id, all).await.ok().and_then(|l| l.tenant);
                    audit(
                        &publisher,
                        tenant.as_deref(),
                        AuditAction::DeadLetterResolved,
                        id,
                    )
                    .await;
                }
            }
            Ok(tally.finish("resolved"))
        }
    }
}
