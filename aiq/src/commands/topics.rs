//! `aiq topics list|apply`.

use std::process::ExitCode;

use aiq_kafka::{TopicAction, apply_topics};
use aiq_topics::TopicSpec;

use crate::cli::TopicsCommand;
use crate::config::Config;

fn describe(spec: &TopicSpec) -> String {
    let retention = spec.retention.map_or_else(
        || "forever".to_owned(),
        |r| format!("{}h", r.as_secs() / 3600),
    );
    format!(
        "{:<32} {:>3} partitions  {:<7}  retention {:<7}  key = {}",
        spec.name,
        spec.partitions,
        spec.cleanup.as_kafka(),
        retention,
        spec.key.describe()
    )
}

pub async fn run(config: &Config, cmd: TopicsCommand) -> anyhow::Result<ExitCode> {
    let set = config.kafka.topics();
    match cmd {
        TopicsCommand::List => {
            for spec in set.specs() {
                println!("{}\n    {}", describe(spec), spec.purpose);
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::Apply => {
            if !config.kafka.manage_topics {
                let names: Vec<String> = set.specs().iter().map(describe).collect();
                anyhow::bail!(
                    "kafka.manage_topics is false (e.g. Azure Event Hubs, which has no topic admin \
                     API); create these topics with the service's own tools:\n{}",
                    names.join("\n")
                );
            }
            let reports = apply_topics(&config.kafka, &set).await?;
            let mut drift = 0;
            for r in &reports {
                match &r.action {
                    TopicAction::Created => println!("{:<32} created", r.topic),
                    TopicAction::Unchanged => println!("{:<32} unchanged", r.topic),
                    TopicAction::Updated(changes) => {
                        for (key, was, now) in changes {
                            println!(
                                "{:<32} updated {key}: {} -> {now}",
                                r.topic,
                                was.as_deref().unwrap_or("(unset)")
                            );
                        }
                    }
                    TopicAction::Drift(why) => {
                        drift += 1;
                        println!("{:<32} DRIFT: {why}", r.topic);
                    }
                }
            }
            if drift > 0 {
                eprintln!(
                    "aiq: {drift} topic(s) differ from the declaration in ways apply does not change"
                );
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
