//! Every task in the example workflows gives its connector arguments of the shape the
//! connector takes, so an example copied into a deployment runs as written.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

fn tasks(v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(task)) = map.get("task")
                && let Some(Value::String(connector)) = task.get("connector")
            {
                out.push((
                    connector.clone(),
                    task.get("args").cloned().unwrap_or(Value::Null),
                ));
            }
            map.values().for_each(|x| tasks(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| tasks(x, out)),
        _ => {}
    }
}

#[test]
fn example_workflows_give_their_connectors_valid_arguments() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workflows");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).unwrap()
        } else {
            serde_yaml_ng::from_str(&text).unwrap()
        };
        let mut found = Vec::new();
        tasks(&doc, &mut found);
        for (connector, args) in found {
            checked += 1;
            if let Err(e) = aiq_connectors::check_args(&connector, &args) {
                wrong.push(format!("{}: {e:?}", path.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(checked > 20, "only {checked} tasks found");
}
