//! The rules of the workspace's shape that ARCHITECTURE.md writes down, checked:
//!
//! - dependencies go one way: no stage crate depends on another stage crate, and no
//!   library depends on a stage (only the binary and the load harness wire stages);
//! - the contract and the engine core stay pure: no I/O crate among their dependencies;
//! - the orchestrator never links the connectors (only the worker calls them);
//! - no source file under a `src/` is longer than 1,000 lines (test modules excepted);
//! - README.md and ARCHITECTURE.md stand alone: no links outside the repository, no
//!   issue numbers.
//!
//! Read from `cargo metadata --no-deps`, so a new crate or dependency is checked without
//! anyone updating this file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The stream stages. Each is a crate of its own; none may depend on another.
const STAGES: [&str; 4] = ["aiq-ingest", "aiq-orchestrator", "aiq-worker", "aiq-sink"];
/// Crates allowed to depend on stages: they run them.
const RUNNERS: [&str; 2] = ["aiq", "aiq-loadtests"];
/// Crates that must do no I/O: the contract and the engine core.
const PURE: [&str; 2] = ["aiq-topics", "aiq-engine"];
/// Dependencies that mean I/O (a runtime, a client, a server).
const IO_CRATES: [&str; 10] = [
    "tokio", "rdkafka", "scylla", "reqwest", "axum", "hyper", "sqlx", "lettre", "ureq", "parquet",
];
const MAX_LINES: usize = 1_000;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the aiq crate sits inside the workspace")
        .to_path_buf()
}

/// Each workspace package's normal and build dependencies (dev-dependencies excluded:
/// an end-to-end test may start two stages), by name.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("package name").to_owned();
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .filter_map(|d| d["name"].as_str().map(str::to_owned))
                .collect();
            (name, deps)
        })
        .collect()
}

#[test]
fn both_pipeline_stages_are_crates_of_their_own() {
    let deps = dependencies();
    for stage in STAGES {
        assert!(deps.contains_key(stage), "{stage} is not a workspace crate");
    }
    assert!(
        !deps.contains_key("aiq-pipeline"),
        "the orchestrator and the worker are two crates now"
    );
    let orchestrator = &deps["aiq-orchestrator"];
    assert!(
        !orchestrator.iter().any(|d| d == "aiq-connectors"),
        "the orchestrator must not depend on the connectors: {orchestrator:?}"
    );
}

#[test]
fn no_stage_depends_on_another_stage_and_no_library_on_a_stage() {
    let violations = stage_violations(&dependencies());
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_contract_and_the_engine_do_no_io() {
    let violations = purity_violations(&dependencies());
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

fn stage_violations(deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (krate, list) in deps {
        if RUNNERS.contains(&krate.as_str()) {
            continue;
        }
        for d in list.iter().filter(|d| STAGES.contains(&d.as_str())) {
            out.push(if STAGES.contains(&krate.as_str()) {
                format!("stage {krate} depends on stage {d}")
            } else {
                format!("library {krate} depends on stage {d}")
            });
        }
    }
    out
}

fn purity_violations(deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for krate in PURE {
        let Some(list) = deps.get(krate) else {
            out.push(format!("{krate} is missing from the workspace"));
            continue;
        };
        for d in list.iter().filter(|d| IO_CRATES.contains(&d.as_str())) {
            out.push(format!("{krate} must do no I/O but depends on {d}"));
        }
    }
    out
}

/// The rules catch what they are meant to: a made-up workspace that breaks each one.
#[test]
fn the_rules_fail_on_a_workspace_that_breaks_them() {
    let bad: BTreeMap<String, Vec<String>> = [
        ("aiq-worker", vec!["aiq-orchestrator"]),
        ("aiq-kafka", vec!["aiq-sink"]),
        ("aiq", vec!["aiq-ingest", "aiq-sink"]),
        ("aiq-engine", vec!["tokio", "serde"]),
        ("aiq-topics", vec!["rdkafka"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        stage_violations(&bad),
        vec![
            "library aiq-kafka depends on stage aiq-sink".to_owned(),
            "stage aiq-worker depends on stage aiq-orchestrator".to_owned(),
        ]
    );
    assert_eq!(
        purity_violations(&bad),
        vec![
            "aiq-topics must do no I/O but depends on rdkafka".to_owned(),
            "aiq-engine must do no I/O but depends on tokio".to_owned(),
        ]
    );
}

/// Whether `path` is library or binary source: below a `src/` folder and not a test
/// module (`tests.rs`, or anything below a `tests/` folder).
fn is_source(path: &Path) -> bool {
    let parts: Vec<_> = path.components().map(|c| c.as_os_str()).collect();
    parts.iter().any(|c| *c == "src")
        && !parts.iter().any(|c| *c == "tests")
        && path.file_name().is_some_and(|n| n != "tests.rs")
}

#[test]
fn no_source_file_is_longer_than_a_thousand_lines() {
    let root = workspace_root();
    let mut files = Vec::new();
    files_ending(&root, &[".rs"], &mut files);
    files.retain(|f| is_source(f.strip_prefix(&root).unwrap_or(f)));
    assert!(
        files.len() > 100,
        "found only {} source files: the walk is broken",
        files.len()
    );
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_LINES).then(|| format!("{} has {lines} lines", f.display()))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "split these by concern:\n{}",
        long.join("\n")
    );
}

/// Every file below `dir` whose name ends with one of `endings`, build output skipped.
fn files_ending(dir: &Path, endings: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | "node_modules" | ".services"
            ) {
                files_ending(&path, endings, out);
            }
        } else if endings.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}

/// What a line of documentation must not hold: a link out (a Markdown target or an
/// autolink to the web or above the repository) or a pointer into the planning side.
/// Example URLs inside workflow snippets are data, not links, and pass.
fn points_outside(line: &str) -> Option<&'static str> {
    let lower = line.to_lowercase();
    ["](http", "](../", "<http", "shared/", "issue #"]
        .into_iter()
        .find(|bad| lower.contains(bad))
}

#[test]
fn the_docs_stand_alone() {
    let root = workspace_root();
    let mut docs = Vec::new();
    files_ending(&root, &[".md"], &mut docs);
    let mut sources = Vec::new();
    files_ending(&root, &[".rs"], &mut sources);
    assert!(docs.iter().any(|d| d.ends_with("ARCHITECTURE.md")));
    let mut found = Vec::new();
    for (path, crate_docs_only) in docs
        .iter()
        .map(|p| (p, false))
        .chain(sources.iter().map(|p| (p, true)))
    {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if crate_docs_only && !line.trim_start().starts_with("//!") {
                continue;
            }
            if let Some(bad) = points_outside(line) {
                let shown = path.strip_prefix(&root).unwrap_or(path).display();
                found.push(format!("{shown}:{}: {bad:?} in {line}", n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "docs must stand alone:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_doc_rule_catches_links_out() {
    assert_eq!(
        points_outside("see [the brief](../shared/DESIGN.md)"),
        Some("](../")
    );
    assert_eq!(points_outside("## Engine core (Issue #3)"), Some("issue #"));
    assert_eq!(
        points_outside("[docs](https://example.com)"),
        Some("](http")
    );
    assert_eq!(
        points_outside("url: \"https://shop.example.com/api\""),
        None
    );
    assert_eq!(points_outside("see [ops](ops/README.md)"), None);
}
