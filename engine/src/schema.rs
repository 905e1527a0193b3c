//! The JSON Schema of definition documents, for editors (`engine/schema/workflow.schema.json`).

use crate::definition::Definition;

pub fn workflow_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Definition);
    serde_json::to_value(&schema).unwrap_or_default()
}

/// The schema as checked in: pretty JSON with a trailing newline.
pub fn workflow_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&workflow_schema()).unwrap_or_default();
    text.push('\n');
    text
}
