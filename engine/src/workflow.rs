//! A validated workflow version, ready to run: the definition, its content hash, its
//! compiled expressions and an index of its steps and blocks.
//!
//! Only validation makes one: [`Workflow::compile`] (in `validate`) runs the checks and
//! hands what they collected to `Workflow::from_checked`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aiq_topics::StepId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::definition::{Definition, Step, StepKind};
use crate::expr::Expressions;

/// A list of steps that runs in order: the workflow, a parallel branch, a foreach body.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockId {
    Top,
    Branch { step: StepId, index: usize },
    Body { step: StepId },
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockId::Top => f.write_str("the top level"),
            BlockId::Branch { step, index } => write!(f, "branch {index} of {:?}", step.as_str()),
            BlockId::Body { step } => write!(f, "the body of {:?}", step.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StepInfo {
    pub step: Step,
    pub block: BlockId,
    pub position: usize,
    pub pointer: String,
    pub in_loop: bool,
}

/// Where control goes after `id` completes normally (not through a catch).
pub(crate) fn default_next(
    steps: &BTreeMap<StepId, StepInfo>,
    blocks: &BTreeMap<BlockId, Vec<StepId>>,
    id: &StepId,
) -> Option<StepId> {
    let info = steps.get(id)?;
    if let Some(n) = &info.step.next {
        return Some(n.clone());
    }
    if info.step.end || matches!(info.step.kind, StepKind::Succeed(_) | StepKind::Fail(_)) {
        return None;
    }
    blocks.get(&info.block)?.get(info.position + 1).cloned()
}

/// Every step control may reach from `id` within its block.
pub(crate) fn successors(
    steps: &BTreeMap<StepId, StepInfo>,
    blocks: &BTreeMap<BlockId, Vec<StepId>>,
    id: &StepId,
) -> Vec<StepId> {
    let Some(info) = steps.get(id) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match &info.step.kind {
        StepKind::Choice(c) => {
            out.extend(c.cases.iter().map(|c| c.next.clone()));
            out.extend(c.default.iter().cloned());
        }
        _ => out.extend(default_next(steps, blocks, id)),
    }
    out.extend(info.step.catch.iter().map(|r| r.next.clone()));
    out.sort();
    out.dedup();
    out
}

#[derive(Clone)]
pub struct Workflow {
    def: Definition,
    hash: String,
    version: u32,
    pub(crate) exprs: Expressions,
    pub(crate) steps: BTreeMap<StepId, StepInfo>,
    pub(crate) blocks: BTreeMap<BlockId, Vec<StepId>>,
    input_validator: Option<Arc<jsonschema::Validator>>,
}

impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow")
            .field("id", &self.def.id)
            .field("hash", &self.hash)
            .field("steps", &self.steps.len())
            .finish_non_exhaustive()
    }
}

/// Sorted keys at every level, so that the hash does not depend on key order.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

impl Workflow {
    /// A workflow from a definition that passed validation, with the expressions and the
    /// step and block index the checks built.
    pub(crate) fn from_checked(
        def: Definition,
        exprs: Expressions,
        steps: BTreeMap<StepId, StepInfo>,
        blocks: BTreeMap<BlockId, Vec<StepId>>,
    ) -> Self {
        let input_validator = def
            .input_schema
            .as_ref()
            .and_then(|s| jsonschema::validator_for(s).ok())
            .map(Arc::new);
        let json = serde_json::to_value(&def).unwrap_or(Value::Null);
        let bytes = serde_json::to_vec(&canonical(&json)).unwrap_or_default();
        let hash = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            def,
            hash,
            version: 0,
            exprs,
            steps,
            blocks,
            input_validator,
        }
    }

    /// The registry's version number; 0 for a document not registered.
    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    pub fn definition(&self) -> &Definition {
        &self.def
    }

    /// SHA-256 of the definition's canonical JSON: equal documents, equal hashes.
    pub fn content_hash(&self) -> &str {
        &self.hash
    }

    pub fn step(&self, id: &StepId) -> Option<&StepInfo> {
        self.steps.get(id)
    }

    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    pub(crate) fn first_of(&self, block: &BlockId) -> Option<&StepId> {
        self.blocks.get(block)?.first()
    }

    pub(crate) fn next_after(&self, id: &StepId) -> Option<StepId> {
        default_next(&self.steps, &self.blocks, id)
    }

    /// Checks a run input against the workflow's input schema. Errors name the instance
    /// path and the reason.
    pub fn validate_input(&self, input: &Value) -> Result<(), Vec<String>> {
        let Some(v) = &self.input_validator else {
            return Ok(());
        };
        let errors: Vec<String> = v
            .iter_errors(input)
            .map(|e| {
                let path = e.instance_path().to_string();
                format!("{}: {e}", if path.is_empty() { "/" } else { &path })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
