//! `aiq-load pipe` against the real broker: every input comes out of the transactional
//! pipe once and unchanged. Checked here by reading both topics back, record by record,
//! not only by the pipe's own count of what it read back.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aiq_testkit::{KAFKA, require_service, unique};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const MESSAGES: usize = 2_000;
const PARTITIONS: i32 = 3;

/// The cells of the table row after the Markdown header separator.
fn row(markdown: &str) -> Vec<String> {
    let mut lines = markdown.lines().skip_while(|l| !l.starts_with("| ---"));
    lines.next();
    lines
        .next()
        .unwrap()
        .split('|')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Every (key, payload) of `topic` with how many times it occurs, read from the
/// beginning to the end of each partition at `isolation`.
fn records(brokers: &str, topic: &str, isolation: &str) -> HashMap<(Vec<u8>, Vec<u8>), usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-test"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = HashMap::new();
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "{topic} not read to its end");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let key = m.key().unwrap_or_default().to_vec();
                let payload = m.payload().unwrap_or_default().to_vec();
                *seen.entry((key, payload)).or_insert(0) += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn every_input_comes_through_the_transactional_pipe_exactly_once() {
    let brokers = require_service!(KAFKA);
    // Small batches over three producers taken in turn: hundreds of transactions, each
    // begun while the coordinator may still complete the one before it.
    let args = ["--producers", "3", "--batch-max-records", "7"];
    exactly_once(&brokers, &args).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_input_comes_through_the_plainly_committed_pipe_exactly_once() {
    let brokers = require_service!(KAFKA);
    exactly_once(&brokers, &["--plain-commit", "--producers", "1"]).await;
}

/// Runs the pipe with `args`, keeping its topics, and compares them.
async fn exactly_once(brokers: &str, args: &[&str]) {
    let brokers = brokers.to_owned();
    let prefix = format!("{}.", unique("pipe").replace('_', "-"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aiq-load"))
        .args(["pipe", "--brokers", &brokers, "--topic-prefix", &prefix])
        .args(["--messages", &MESSAGES.to_string()])
        .args(["--partitions", &PARTITIONS.to_string(), "--keep-topics"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    // Named whenever the pipe ran to its end, even when its own check failed.
    let kept = stdout
        .lines()
        .find_map(|l| l.strip_prefix("kept topics: "))
        .and_then(|k| k.split_once(' '));
    let Some((input, output)) = kept.map(|(i, o)| (i.to_owned(), o.to_owned())) else {
        panic!(
            "the pipe did not run to its end:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let read = {
        let (brokers, input, output) = (brokers.clone(), input.clone(), output.clone());
        tokio::task::spawn_blocking(move || {
            (
                records(&brokers, &input, "read_uncommitted"),
                records(&brokers, &output, "read_committed"),
            )
        })
        .await
    };
    // Deleted before anything is asserted, so that a failure leaves no topics behind.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let _ = admin.delete_topics(&[&input, &output], &opts).await;
    let group = input.strip_suffix("-in").unwrap_or(&input);
    let _ = admin.delete_groups(&[group], &opts).await;
    let (inputs, outputs) = read.unwrap();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(input.starts_with(&prefix) && output.starts_with(&prefix));

    // messages | bytes each | partitions | batch at most | commit | producers |
    // transactions | records per transaction | seconds | transactions/s | pipe records/s |
    // read back | missing | duplicated | altered
    let cells = row(&stdout);
    assert_eq!(cells[0], MESSAGES.to_string(), "{cells:?}");
    assert!(cells[1].parse::<usize>().unwrap() > 100, "{cells:?}");
    assert_eq!(cells[2], PARTITIONS.to_string(), "{cells:?}");
    let producers = args
        .iter()
        .position(|a| *a == "--producers")
        .map(|i| args[i + 1]);
    assert_eq!(Some(cells[5].as_str()), producers, "{cells:?}");
    let transactions: u64 = cells[6].parse().unwrap();
    assert!(transactions >= 1, "{cells:?}");
    if let Some(i) = args.iter().position(|a| *a == "--batch-max-records") {
        let most: u64 = args[i + 1].parse().unwrap();
        assert!(transactions >= MESSAGES as u64 / most, "{cells:?}");
    }
    assert!(cells[10].parse::<f64>().unwrap() > 0.0, "{cells:?}");
    assert_eq!(
        cells[11..],
        [MESSAGES.to_string(), "0".into(), "0".into(), "0".into()]
    );

    // Inputs are all different, so equal multisets mean each came out exactly once.
    assert_eq!(inputs.len(), MESSAGES);
    assert!(inputs.values().all(|n| *n == 1));
    assert_eq!(outputs.values().sum::<usize>(), MESSAGES);
    assert!(
        outputs == inputs,
        "{} outputs are not inputs, {} inputs have no output",
        outputs.keys().filter(|k| !inputs.contains_key(*k)).count(),
        inputs.keys().filter(|k| !outputs.contains_key(*k)).count()
    );
}
