//! The workflows a load starts, registered for every tenant before the clock starts.
//! Built-in names need no peer: their tasks use the `noop` connector.

use std::path::Path;

use serde_json::{Value, json};

use crate::loadgen::LoadError;

/// A workflow document and its content type for `POST /v1/workflows`.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: String,
    pub content_type: &'static str,
    pub body: String,
}

/// `hello` (one noop task), `ten-steps` (ten), `steps-N` (N), or the id of a document in
/// `examples` (`<id>.yaml` or `<id>.json`, e.g. `hello-pipeline`).
pub fn document(name: &str, examples: &Path) -> Result<Document, LoadError> {
    let steps = match name {
        "hello" => Some(1),
        "ten-steps" => Some(10),
        _ => name
            .strip_prefix("steps-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0),
    };
    if let Some(n) = steps {
        return Ok(Document {
            id: name.to_owned(),
            content_type: "application/json",
            body: noop_chain(name, n).to_string(),
        });
    }
    for (ext, content_type) in [("yaml", "application/yaml"), ("json", "application/json")] {
        let path = examples.join(format!("{name}.{ext}"));
        if path.is_file() {
            let body = std::fs::read_to_string(&path)
                .map_err(|source| LoadError::Document { path, source })?;
            return Ok(Document {
                id: name.to_owned(),
                content_type,
                body,
            });
        }
    }
    Err(LoadError::Setting {
        name: "--mix",
        reason: format!(
            "{name:?} is neither hello, ten-steps, steps-N nor a document in {}",
            examples.display()
        ),
    })
}

/// `n` noop tasks in a row; the input is not checked, so any trigger body starts it.
pub fn noop_chain(id: &str, n: usize) -> Value {
    let steps: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("s{i}"), "task": {"connector": "noop", "args": {"output": i}}}))
        .collect();
    json!({"id": id, "name": format!("{n} noop step(s), for load"), "steps": steps})
}

/// `load-cron-<k>`: one noop task, started every second by its cron schedule.
pub fn every_second(k: usize) -> Document {
    let id = format!("load-cron-{k}");
    let body = json!({
        "id": id,
        "name": "a per-second schedule, for load",
        "triggers": {"cron": [{"schedule": "* * * * * *"}]},
        "steps": [{"id": "tick", "task": {"connector": "noop", "args": {"output": k}}}],
    });
    Document {
        id,
        content_type: "application/json",
        body: body.to_string(),
    }
}

/// Disables workflow `id` of `tenant`: its schedules stop ticking.
pub async fn disable(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    tenant: &str,
    id: &str,
) -> Result<(), LoadError> {
    let resp = client
        .post(format!("{api}/v1/workflows/{id}/disable"))
        .bearer_auth(token)
        .header(crate::loadgen::ACTING_TENANT, tenant)
        .send()
        .await?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    Err(LoadError::Disable {
        tenant: tenant.to_owned(),
        workflow: id.to_owned(),
        status,
        body: resp.text().await.unwrap_or_default(),
    })
}

/// Registers `doc` for `tenant`, acting for it with a platform admin's credential.
pub async fn register(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    tenant: &str,
    doc: &Document,
) -> Result<(), LoadError> {
    let resp = client
        .post(format!("{api}/v1/workflows"))
        .bearer_auth(token)
        .header(crate::loadgen::ACTING_TENANT, tenant)
        .header("content-type", doc.content_type)
        .body(doc.body.clone())
        .send()
        .await?;
    let status = resp.status().as_u16();
    if matches!(status, 200 | 201) {
        return Ok(());
    }
    Err(LoadError::Register {
        tenant: tenant.to_owned(),
        workflow: doc.id.clone(),
        status,
        body: resp.text().await.unwrap_or_default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn built_in_workflows_are_chains_of_noop_tasks_and_valid() {
        let none = Path::new("/nonexistent");
        for (name, n) in [("hello", 1), ("ten-steps", 10), ("steps-3", 3)] {
            let d = document(name, none).unwrap();
            let v: Value = serde_json::from_str(&d.body).unwrap();
            assert_eq!(v["steps"].as_array().unwrap().len(), n);
            assert_eq!(v["id"], name);
            aiq_engine::validate_source("load.json", &d.body).unwrap();
        }
        assert!(document("steps-0", none).is_err());
        let cron = every_second(3);
        assert_eq!(cron.id, "load-cron-3");
        aiq_engine::validate_source("cron.json", &cron.body).unwrap();
        assert!(document("nope", none).is_err());
    }

    #[test]
    fn example_documents_are_found_by_id() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workflows");
        let d = document("hello-pipeline", &examples).unwrap();
        assert_eq!(d.content_type, "application/yaml");
        assert!(d.body.contains("id: hello-pipeline"));
    }
}
