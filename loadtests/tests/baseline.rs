//! `aiq-load baseline` against the real broker: every message produced comes back.
#![allow(clippy::unwrap_used)]

use aiq_testkit::{KAFKA, require_service};

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

#[test]
fn baseline_produces_and_consumes_every_message() {
    let brokers = require_service!(KAFKA);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aiq-load"))
        .args(["baseline", "--brokers", &brokers, "--messages", "500"])
        .args(["--partitions", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // messages | bytes each | partitions | produced | consumed | produce msg/s | round trip msg/s
    let cells = row(&stdout);
    assert_eq!(cells[0], "500");
    assert!(cells[1].parse::<usize>().unwrap() > 100, "{cells:?}");
    assert_eq!(cells[2], "3");
    assert_eq!(cells[3], "500");
    assert_eq!(cells[4], "500");
    assert!(cells[6].parse::<f64>().unwrap() > 0.0);
}
