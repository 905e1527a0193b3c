//! Makes the cluster match the declared topics, idempotently.
//!
//! Missing topics are created; topic configs that differ are set back. A partition count
//! that differs is reported, never changed: adding partitions to a tenant-keyed topic
//! would move tenants to partitions whose owner has none of their state.

use std::collections::HashMap;
use std::time::Duration;

use aiq_topics::{TopicSet, TopicSpec};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::settings::{KafkaError, KafkaSettings};

/// What `apply_topics` did, or could not do, for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicAction {
    Created,
    Unchanged,
    /// Configs set back to the declaration: `(name, was, now)`.
    Updated(Vec<(String, Option<String>, String)>),
    /// A difference that needs an operator's decision.
    Drift(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReport {
    pub topic: String,
    pub action: TopicAction,
}

const TIMEOUT: Duration = Duration::from_secs(15);

fn admin(settings: &KafkaSettings) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    settings
        .client_config()
        .create()
        .map_err(|source| KafkaError::Client {
            what: "admin client",
            brokers: settings.brokers.clone(),
            source,
        })
}

/// Partition counts of the topics that exist, by name.
fn existing_partitions(
    admin: &AdminClient<DefaultClientContext>,
) -> Result<HashMap<String, u32>, KafkaError> {
    let md = tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, TIMEOUT)).map_err(
        |source| KafkaError::Admin {
            op: "metadata",
            source,
        },
    )?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len() as u32))
        .collect())
}

/// Refuses settings whose partition counts differ from the topics that exist: every
/// producer maps a tenant to a partition by the configured count, so a count that is not
/// the topic's would put a tenant's records where its state is not. Topics that do not
/// exist yet are not checked (`aiq topics apply` creates them with the configured counts).
pub fn check_partitions(settings: &KafkaSettings, set: &TopicSet) -> Result<(), KafkaError> {
    let existing = existing_partitions(&admin(settings)?)?;
    for spec in set.specs() {
        let field = if spec.kind.is_tenant_copartitioned() {
            "tenant_partitions"
        } else if spec.kind.uses_work_partitions() {
            "work_partitions"
        } else {
            continue;
        };
        match existing.get(&spec.name) {
            Some(&actual) if actual != spec.partitions => {
                return Err(KafkaError::Setting {
                    field,
                    reason: format!(
                        "is {}, but topic `{}` has {actual} partitions; set `kafka.{field}` \
                         to {actual} (a partition count is fixed once the topic exists)",
                        spec.partitions, spec.name
                    ),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Waits until every named topic shows in metadata with all its partitions led, so
/// that a caller can use a topic as soon as `apply_topics` returns (creation is
/// acknowledged by the controller before every broker's metadata has it).
async fn await_visible(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[String],
) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let md = tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, TIMEOUT))
            .map_err(|source| KafkaError::Admin {
                op: "metadata",
                source,
            })?;
        let ready = topics.iter().all(|name| {
            md.topics().iter().any(|t| {
                t.name() == name
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
        });
        if ready {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::AdminItem {
                op: "create topics",
                resource: topics.join(", "),
                code: format!("not visible with leaders within {TIMEOUT:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates missing topics and restores drifted configs. Returns one report per declared
/// topic, in declaration order.
pub async fn apply_topics(
    settings: &KafkaSettings,
    set: &TopicSet,
) -> Result<Vec<TopicReport>, KafkaError> {
    let admin = admin(settings)?;
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let existing = existing_partitions(&admin)?;

    let missing: Vec<&TopicSpec> = set
        .specs()
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .collect();
    let mut created = Vec::new();
    if !missing.is_empty() {
        let configs: Vec<Vec<(&str, String)>> = missing.iter().map(|s| s.configs()).collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&configs)
            .map(|(s, cfg)| {
                cfg.iter().fold(
                    NewTopic::new(
                        &s.name,
                        s.partitions as i32,
                        TopicReplication::Fixed(i32::from(settings.replication_factor)),
                    ),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        for result in admin
            .create_topics(&new_topics, &opts)
            .await
            .map_err(|source| KafkaError::Admin {
                op: "create topics",
                source,
            })?
        {
            match result {
                Ok(name) => created.push(name),
                // Another process created it between our metadata read and now.
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => created.push(name),
                Err((name, code)) => {
                    return Err(KafkaError::AdminItem {
                        op: "create topic",
                        resource: name,
                        code: code.to_string(),
                    });
                }
            }
        }
    }

    if !created.is_empty() {
        await_visible(&admin, &created).await?;
    }

    let present: Vec<&TopicSpec> = set
        .specs()
        .iter()
        .filter(|s| existing.contains_key(&s.name))
        .collect();
    let specifiers: Vec<ResourceSpecifier<'_>> = present
        .iter()
        .map(|s| ResourceSpecifier::Topic(&s.name))
        .collect();
    let described = if specifiers.is_empty() {
        Vec::new()
    } else {
        admin
            .describe_configs(&specifiers, &opts)
            .await
            .map_err(|source| KafkaError::Admin {
                op: "describe configs",
                source,
            })?
    };

    let mut reports = Vec::new();
    for spec in set.specs() {
        if created.contains(&spec.name) {
            reports.push(TopicReport {
                topic: spec.name.clone(),
                action: TopicAction::Created,
            });
            continue;
        }
        let Some(idx) = present.iter().position(|s| s.name == spec.name) else {
            continue;
        };
        let resource = match described.get(idx) {
            Some(Ok(resource)) => resource,
            Some(Err(code)) => {
                return Err(KafkaError::AdminItem {
                    op: "describe configs",
                    resource: spec.name.clone(),
                    code: code.to_string(),
                });
            }
            None => {
                return Err(KafkaError::AdminItem {
                    op: "describe configs",
                    resource: spec.name.clone(),
                    code: "no answer for this topic".into(),
                });
            }
        };
        let current: HashMap<&str, Option<&str>> = resource
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        let changes: Vec<(String, Option<String>, String)> = spec
            .configs()
            .into_iter()
            .filter(|(k, v)| current.get(k).copied().flatten() != Some(v.as_str()))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    current.get(k).copied().flatten().map(str::to_owned),
                    v,
                )
            })
            .collect();

        let partitions = existing.get(&spec.name).copied().unwrap_or_default();
        let action = if partitions != spec.partitions {
            TopicAction::Drift(format!(
                "has {partitions} partitions, declared {}; partition counts are never changed \
                 automatically because tenants would move away from their state — recreate \
                 the topic or change `kafka.{}_partitions`",
                spec.partitions,
                if spec.kind.is_tenant_copartitioned() {
                    "tenant"
                } else {
                    "work"
                }
            ))
        } else if changes.is_empty() {
            TopicAction::Unchanged
        } else {
            let wanted = spec.configs();
            let alter = wanted.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(&spec.name)),
                |a, (k, v)| a.set(k, v),
            );
            for r in admin
                .alter_configs(&[alter], &opts)
                .await
                .map_err(|source| KafkaError::Admin {
                    op: "alter configs",
                    source,
                })?
            {
                r.map_err(|(_, code)| KafkaError::AdminItem {
                    op: "alter configs",
                    resource: spec.name.clone(),
                    code: code.to_string(),
                })?;
            }
            TopicAction::Updated(changes)
        };
        reports.push(TopicReport {
            topic: spec.name.clone(),
            action,
        });
    }
    Ok(reports)
}
