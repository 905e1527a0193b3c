//! `ops/README.md`'s metric reference lists exactly the metrics the platform registers.
//!
//! The reference is every table row under `## Metrics` (up to the next `## ` heading):
//! the first cell holds the name in backticks, the second the labels in backticks, in
//! the order call sites pass them (a parenthesised note after a label lists its values
//! and is not read), and a histogram's meaning starts with "Histogram". Recording rules
//! (`aiq:*`) have their own section, `## Recording rules`, which is not read: they are
//! Prometheus' names, not ours.

use std::collections::BTreeMap;
use std::path::Path;

use aiq_metrics::{Kind, Metric};

struct Row {
    line: usize,
    labels: Vec<String>,
    histogram: bool,
}

/// The backticked words of a cell, outside parentheses.
fn ticked(cell: &str) -> Vec<String> {
    let mut depth = 0usize;
    let mut outside = String::new();
    for c in cell.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The metric rows of the README, by name. Panics on a row it cannot read, so that a
/// malformed row is fixed rather than silently left out.
fn reference(text: &str) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    let mut in_metrics = false;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if let Some(heading) = line.strip_prefix("## ") {
            in_metrics = heading.trim() == "Metrics";
            continue;
        }
        if !in_metrics || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells[0] == "Metric" || cells[0].chars().all(|c| c == '-' || c == ':') {
            continue;
        }
        assert!(
            cells.len() >= 3,
            "ops/README.md:{line_no}: a metric row has name, labels and meaning: {line}"
        );
        let names = ticked(cells[0]);
        assert_eq!(
            names.len(),
            1,
            "ops/README.md:{line_no}: one metric name in backticks per row: {line}"
        );
        let name = names[0].clone();
        assert!(
            !name.contains(':'),
            "ops/README.md:{line_no}: {name} is a recording rule; it goes under \
             `## Recording rules`"
        );
        let row = Row {
            line: line_no,
            labels: ticked(cells[1]),
            histogram: cells[2].starts_with("Histogram"),
        };
        if let Some(first) = rows.insert(name.clone(), row) {
            panic!(
                "ops/README.md: {name} listed twice (lines {} and {line_no})",
                first.line
            );
        }
    }
    rows
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn the_ops_reference_lists_exactly_the_registered_metrics() {
    let rows = reference(&readme());
    let registered: BTreeMap<&str, &Metric> = aiq_metrics::all().map(|m| (m.name, m)).collect();
    let undocumented: Vec<&str> = registered
        .keys()
        .filter(|n| !rows.contains_key(**n))
        .copied()
        .collect();
    let stale: Vec<String> = rows
        .iter()
        .filter(|(n, _)| !registered.contains_key(n.as_str()))
        .map(|(n, r)| format!("{n} (line {})", r.line))
        .collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "ops/README.md's metric reference differs from aiq_metrics::all():\n  \
         registered but not listed: {undocumented:?}\n  \
         listed but not registered: {stale:?}"
    );
}

#[test]
fn the_ops_reference_gives_each_metric_its_labels_and_kind() {
    let rows = reference(&readme());
    let mut wrong = Vec::new();
    for m in aiq_metrics::all() {
        let Some(row) = rows.get(m.name) else {
            continue;
        };
        if row.labels != m.labels {
            wrong.push(format!(
                "{} (line {}): labels {:?}, registered {:?}",
                m.name, row.line, row.labels, m.labels
            ));
        }
        if row.histogram != (m.kind == Kind::Histogram) {
            wrong.push(format!(
                "{} (line {}): a {}; only a histogram's meaning starts with \"Histogram\"",
                m.name, row.line, m.kind
            ));
        }
    }
    assert!(wrong.is_empty(), "ops/README.md:\n  {}", wrong.join("\n  "));
}

#[test]
fn the_reader_reads_rows_and_skips_other_sections() {
    let text = "\
## Metrics

| Metric | Labels | Meaning |
|---|---|---|
| `aiq_a_total` | `stage` (`x`, `y`), `topic` | Things |
| `aiq_b_seconds` | | Histogram: time |

## Recording rules

| Rule | Labels | From |
|---|---|---|
| `aiq:a:rate1m` | `stage` | Rate |
";
    let rows = reference(text);
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        ["aiq_a_total", "aiq_b_seconds"]
    );
    assert_eq!(rows["aiq_a_total"].labels, ["stage", "topic"]);
    assert!(!rows["aiq_a_total"].histogram);
    assert!(rows["aiq_b_seconds"].labels.is_empty());
    assert!(rows["aiq_b_seconds"].histogram);
}
