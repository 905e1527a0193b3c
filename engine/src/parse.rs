//! Reads a definition document, JSON or YAML, into the model. Errors name the JSON
//! pointer of the offending field.

use serde_path_to_error::{Path, Segment};

use crate::definition::Definition;
use crate::validation_error::ValidationError;

/// Largest definition document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// From the file name's extension; otherwise a document starting with `{` is JSON.
    pub fn detect(file_name: &str, text: &str) -> Self {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            Format::Json
        } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Format::Yaml
        } else if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

pub(crate) fn pointer(path: &Path) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Enum { variant } => {
                out.push('/');
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    out
}

pub fn parse(file: &str, text: &str) -> Result<Definition, ValidationError> {
    let err = |pointer: String, message: String| ValidationError {
        file: file.to_owned(),
        pointer,
        message,
    };
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(err(
            String::new(),
            format!(
                "document is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                text.len()
            ),
        ));
    }
    match Format::detect(file, text) {
        Format::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| err(pointer(e.path()), clean(e.inner().to_string())))
        }
        Format::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                err(
                    pointer(e.path()),
                    strip_yaml_path(&clean(e.inner().to_string())).to_owned(),
                )
            })
        }
    }
}

/// serde_yaml_ng starts its messages with its own path (`steps[0].task: ...`); the
/// pointer says it already.
fn strip_yaml_path(message: &str) -> &str {
    match message.split_once(": ") {
        Some((prefix, rest))
            if !prefix.is_empty()
                && prefix.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-')
                }) =>
        {
            rest
        }
        _ => message,
    }
}

/// serde's messages end with a location that the pointer already gives better.
fn clean(message: String) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    }
}
