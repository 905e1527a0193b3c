//! Validation errors as a user reads them: file, JSON pointer, reason — one line each.

use aiq_engine::validate_source;

fn errors(file: &str, text: &str) -> String {
    match validate_source(file, text) {
        Ok(_) => "valid".to_owned(),
        Err(errors) => errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn document_shape_errors_name_the_field() {
    insta::assert_snapshot!(errors(
        "orders.yaml",
        r#"
id: orders
steps:
  - id: call
    task:
      connector: ftp
"#
    ));
    insta::assert_snapshot!(errors(
        "orders.yaml",
        r#"
id: orders
steps:
  - id: call
    task: { connector: http }
    wait: { duration: 5s }
"#
    ));
    insta::assert_snapshot!(errors(
        "orders.json",
        r#"{"id": "orders", "steps": [{"id": "a", "task": {"connector": "http", "retry": {"max_attempts": 3, "initial_backoff": "soon"}}}]}"#
    ));
    insta::assert_snapshot!(errors("orders.yaml", "id: orders\nstepz: []\n"));
}

#[test]
fn rule_errors_are_all_reported_at_once() {
    insta::assert_snapshot!(errors(
        "sync.yaml",
        r#"
id: sync
timeout: 0s
triggers:
  cron:
    - schedule: "0 2 * *"
    - schedule: "0 2 * * *"
      timezone: Mars/Olympus
  webhooks:
    - name: shop
    - name: shop
steps:
  - id: a
    task:
      connector: http
      args: { url: "${ input.url" }
      retry: { max_attempts: 0, multiplier: 20, jitter: 2, initial_backoff: 1m, max_backoff: 1s }
  - id: b
    choice: { cases: [] }
    next: a
  - id: c
    set: { vars: { "bad-name": 1, ok: "${ secrets.key }" } }
  - id: d
    foreach: { items: "item.list", concurrency: 0, steps: [] }
"#
    ));
}

#[test]
fn graph_errors_name_the_step() {
    insta::assert_snapshot!(errors(
        "graph.yaml",
        r#"
id: graph
steps:
  - id: a
    task: { connector: http }
    next: nowhere
  - id: a
    set: { vars: { x: 1 } }
"#
    ));
    insta::assert_snapshot!(errors(
        "graph.yaml",
        r#"
id: graph
steps:
  - id: start
    task: { connector: http }
    end: true
  - id: orphan
    set: { vars: { x: 1 } }
"#
    ));
    insta::assert_snapshot!(errors(
        "graph.yaml",
        r#"
id: graph
steps:
  - id: poll
    task: { connector: http }
  - id: check
    choice:
      cases: [ { when: "steps.poll.output.done", next: finish } ]
      default: poll
  - id: finish
    succeed: {}
"#
    ));
    insta::assert_snapshot!(errors(
        "graph.yaml",
        r#"
id: graph
steps:
  - id: fan
    parallel:
      branches:
        - steps:
            - id: inner
              task: { connector: http }
              next: outer
  - id: outer
    succeed: {}
"#
    ));
}

#[test]
fn a_loop_through_a_wait_is_fine() {
    assert_eq!(
        errors(
            "poll.yaml",
            r#"
id: poll
steps:
  - id: poll
    task: { connector: http }
  - id: check
    choice:
      cases: [ { when: "steps.poll.output.done", next: finish } ]
      default: pause
  - id: pause
    wait: { duration: 30s }
    next: poll
  - id: finish
    succeed: {}
"#
        ),
        "valid"
    );
}

#[test]
fn limits_are_enforced() {
    let mut doc = String::from("id: big\nsteps:\n");
    for i in 0..1001 {
        doc.push_str(&format!(
            "  - id: s{i}\n    set: {{ vars: {{ x: {i} }} }}\n"
        ));
    }
    let e = errors("big.yaml", &doc);
    assert_eq!(e, "big.yaml:/steps: 1001 steps in all; the limit is 1000");

    let mut nested = String::from("id: deep\nsteps:\n");
    let mut indent = String::from("  ");
    for d in 0..10 {
        nested.push_str(&format!("{indent}- id: p{d}\n{indent}  parallel:\n{indent}    branches:\n{indent}      - steps:\n"));
        indent.push_str("          ");
    }
    nested.push_str(&format!("{indent}- id: leaf\n{indent}  succeed: {{}}\n"));
    let e = errors("deep.yaml", &nested);
    assert!(e.contains("blocks nest 9 deep; the limit is 8"), "{e}");

    let huge = format!(
        "id: huge\ndescription: \"{}\"\nsteps: []\n",
        "x".repeat(1024 * 1024)
    );
    assert!(
        errors("huge.yaml", &huge).starts_with("huge.yaml:/: document is 1048"),
        "size limit"
    );

    let waits = |d: &str| {
        errors(
            "wait.yaml",
            &format!(
                "id: wait\nsteps:\n  - id: t\n    task: {{ connector: noop, args: {{}}, schedule_to_start: {d} }}\n"
            ),
        )
    };
    assert_eq!(
        waits("8d"),
        "wait.yaml:/steps/0/task/schedule_to_start: must be at most 7days"
    );
    assert_eq!(
        waits("0s"),
        "valid",
        "no wait for a worker at all is allowed"
    );
    assert_eq!(waits("7d"), "valid");
}

#[test]
fn input_schema_is_checked_at_registration_and_at_trigger() {
    assert!(
        errors(
            "s.yaml",
            "id: s\ninput_schema: { type: objekt }\nsteps: [ { id: a, succeed: {} } ]\n"
        )
        .starts_with("s.yaml:/input_schema: not a valid JSON Schema")
    );
    let wf = validate_source(
        "s.yaml",
        r#"
id: s
input_schema:
  type: object
  required: [order_id]
  properties:
    order_id: { type: integer, minimum: 1 }
steps: [ { id: a, succeed: {} } ]
"#,
    )
    .unwrap();
    assert!(
        wf.validate_input(&serde_json::json!({"order_id": 3}))
            .is_ok()
    );
    let errs = wf
        .validate_input(&serde_json::json!({"order_id": 0}))
        .unwrap_err();
    assert_eq!(
        errs,
        vec!["/order_id: 0 is less than the minimum of 1".to_owned()]
    );
    let errs = wf.validate_input(&serde_json::json!({})).unwrap_err();
    assert_eq!(
        errs,
        vec!["/: \"order_id\" is a required property".to_owned()]
    );
}

#[test]
fn equal_documents_hash_equal_whatever_the_format_or_key_order() {
    let yaml = validate_source(
        "a.yaml",
        "id: h\nsteps:\n  - id: a\n    task: { connector: http, args: { b: 1, a: 2 } }\n",
    )
    .unwrap();
    let json = validate_source(
        "a.json",
        r#"{"steps": [{"task": {"args": {"a": 2, "b": 1}, "connector": "http"}, "id": "a"}], "id": "h"}"#,
    )
    .unwrap();
    assert_eq!(yaml.content_hash(), json.content_hash());
    let other = validate_source(
        "a.yaml",
        "id: h\nsteps:\n  - id: a\n    task: { connector: sql }\n",
    )
    .unwrap();
    assert_ne!(yaml.content_hash(), other.content_hash());
}
