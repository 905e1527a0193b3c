//! Expressions, in CEL (the Common Expression Language of Google's Workflows and of
//! Kubernetes' validation rules): side-effect free, deterministic, terminating, and with
//! no clock of its own — which is what a replayable engine needs.
//!
//! Condition fields (`when`, `items`, `until`, `correlation`) hold a bare expression.
//! Data fields (task `args`, `input`, `set`, `output`) are JSON in which a string that
//! is exactly `${ expr }` becomes the expression's value, of any type, and `${ expr }`
//! inside a longer string is replaced by the value's text.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use aiq_topics::{RunId, StepId};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use cel::{Context, Env, Program};
use serde_json::Value;

/// The names an expression may read.
pub const VARIABLES: [&str; 6] = ["input", "vars", "steps", "item", "index", "run"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expression `{expr}`: {reason}")]
pub struct EvalError {
    pub expr: String,
    pub reason: String,
}

/// CEL's standard library: building it declares a few hundred overloads, far more work
/// than evaluating a typical expression, so every evaluation shares this one. It is
/// constant (no variables, nothing added), not a cache.
static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Compiled expressions by source text; built once per workflow version.
#[derive(Clone, Default)]
pub struct Expressions {
    programs: BTreeMap<String, Compiled>,
}

#[derive(Clone)]
struct Compiled {
    program: Arc<Program>,
    /// The variables it reads: only these are converted into CEL values at evaluation,
    /// which keeps a loop over a large input linear.
    reads: Vec<&'static str>,
}

impl std::fmt::Debug for Expressions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expressions")
            .field("count", &self.programs.len())
            .finish()
    }
}

/// What an expression sees. It borrows the run state: each variable becomes a CEL value
/// only when an expression reads it.
pub struct Scope<'a> {
    pub input: &'a Value,
    pub vars: &'a BTreeMap<String, Value>,
    /// `steps.<id>.output`: the outputs of the steps finished in each frame in scope,
    /// outermost frame first, so that an inner frame's output of a step wins.
    pub steps: Vec<&'a BTreeMap<StepId, Value>>,
    pub item: Option<&'a Value>,
    pub index: Option<u64>,
    pub run: RunScope<'a>,
}

/// `run.id`, `run.tenant`, `run.workflow` and `run.version`.
#[derive(Clone, Copy)]
pub struct RunScope<'a> {
    pub id: &'a RunId,
    pub tenant: &'a str,
    pub workflow: &'a str,
    pub version: u32,
}

impl Expressions {
    /// Compiles `source`, checking that it reads only known variables. `in_loop` allows
    /// `item` and `index`.
    pub fn compile(&mut self, source: &str, in_loop: bool) -> Result<(), String> {
        let program = Program::compile(source).map_err(|e| {
            let text = e.to_string();
            // CEL's parser errors are multi-line with a caret; keep the first line.
            text.lines()
                .next()
                .unwrap_or("does not parse")
                .trim()
                .to_owned()
        })?;
        let refs = program.references();
        let mut reads = Vec::new();
        for var in refs.variables() {
            if !VARIABLES.contains(&var) {
                return Err(format!(
                    "unknown variable `{var}`; expressions read input, vars, steps, run, and in a foreach item and index"
                ));
            }
            if !in_loop && (var == "item" || var == "index") {
                return Err(format!("`{var}` exists only inside a foreach"));
            }
            if let Some(known) = VARIABLES.iter().find(|v| **v == var) {
                reads.push(*known);
            }
        }
        self.programs.insert(
            source.to_owned(),
            Compiled {
                program: Arc::new(program),
                reads,
            },
        );
        Ok(())
    }

    /// Compiles every `${ }` of a data field.
    pub fn compile_template(&mut self, value: &Value, in_loop: bool) -> Result<(), String> {
        match value {
            Value::String(s) => {
                for part in split_template(s)? {
                    if let Part::Expr(e) = part {
                        self.compile(e, in_loop)?;
                    }
                }
                Ok(())
            }
            Value::Array(items) => items
                .iter()
                .try_for_each(|v| self.compile_template(v, in_loop)),
            Value::Object(map) => map
                .values()
                .try_for_each(|v| self.compile_template(v, in_loop)),
            _ => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.programs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// A context with the variables `reads` names, built from `scope`. The CEL values
    /// borrow the JSON's strings rather than copy them.
    fn context<'a>(scope: &Scope<'a>, reads: &[&str]) -> Context<'a, 'a> {
        let mut ctx = Context::with_env(Arc::clone(&STDLIB));
        for &name in reads {
            let value: Box<dyn Val + 'a> = match name {
                "input" => to_val(scope.input),
                "vars" => Box::new(CelMap::from(
                    scope
                        .vars
                        .iter()
                        .map(|(k, v)| (CelMapKey::from(k.as_str()), to_val(v)))
                        .collect::<HashMap<_, _>>(),
                )),
                "steps" => {
                    let mut steps = HashMap::new();
                    for outputs in &scope.steps {
                        for (k, v) in *outputs {
                            let output = HashMap::from([(CelMapKey::from("output"), to_val(v))]);
                            let output: Box<dyn Val + 'a> = Box::new(CelMap::from(output));
                            steps.insert(CelMapKey::from(k.as_str()), output);
                        }
                    }
                    Box::new(CelMap::from(steps))
                }
                "run" => {
                    let run: [(CelMapKey<'a>, Box<dyn Val + 'a>); 4] = [
                        (
                            "id".into(),
                            Box::new(CelString::from(scope.run.id.to_string())),
                        ),
                        ("tenant".into(), Box::new(CelString::from(scope.run.tenant))),
                        (
                            "workflow".into(),
                            Box::new(CelString::from(scope.run.workflow)),
                        ),
                        (
                            "version".into(),
                            Box::new(CelInt::from(i64::from(scope.run.version))),
                        ),
                    ];
                    Box::new(CelMap::from(HashMap::from(run)))
                }
                "item" => match scope.item {
                    Some(item) => to_val(item),
                    None => continue,
                },
                "index" => match scope.index {
                    Some(i) => Box::new(CelInt::from(i64::try_from(i).unwrap_or(i64::MAX))),
                    None => continue,
                },
                _ => continue,
            };
            ctx.add_variable_as_val(name, value);
        }
        ctx
    }

    /// Evaluates a bare expression.
    pub fn eval(&self, source: &str, scope: &Scope<'_>) -> Result<Value, EvalError> {
        let err = |reason: String| EvalError {
            expr: source.to_owned(),
            reason,
        };
        let compiled = self
            .programs
            .get(source)
            .ok_or_else(|| err("was not compiled when the workflow was validated".into()))?;
        let ctx = Self::context(scope, &compiled.reads);
        let value = compiled
            .program
            .execute(&ctx)
            .map_err(|e| err(e.to_string()))?;
        value
            .json()
            .map_err(|e| err(format!("result is not JSON: {e}")))
    }

    /// Evaluates a data field's templates.
    pub fn render(&self, value: &Value, scope: &Scope<'_>) -> Result<Value, EvalError> {
        match value {
            // Most strings of a data field are plain text.
            Value::String(s) if !s.contains("${") => Ok(Value::String(s.clone())),
            Value::String(s) => {
                let parts = split_template(s).map_err(|reason| EvalError {
                    expr: s.clone(),
                    reason,
                })?;
                match parts.as_slice() {
                    [] => Ok(Value::String(String::new())),
                    [Part::Expr(e)] => self.eval(e, scope),
                    _ => {
                        let mut out = String::new();
                        for part in parts {
                            match part {
                                Part::Text(t) => out.push_str(t),
                                Part::Expr(e) => match self.eval(e, scope)? {
                                    Value::String(s) => out.push_str(&s),
                                    other => out.push_str(&other.to_string()),
                                },
                            }
                        }
                        Ok(Value::String(out))
                    }
                }
            }
            Value::Array(items) => items
                .iter()
                .map(|v| self.render(v, scope))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| self.render(v, scope).map(|v| (k.clone(), v)))
                .collect::<Result<serde_json::Map<_, _>, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }
}

/// JSON to CEL. Integers become CEL `int` (signed) whatever their sign: CEL does not mix
/// `int` and `uint` in arithmetic, and `item * 2` must work on a JSON `3`.
fn to_val(v: &Value) -> Box<dyn Val + '_> {
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => {
            Box::new(CelList::from(items.iter().map(to_val).collect::<Vec<_>>()))
        }
        Value::Object(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    Text(&'a str),
    Expr(&'a str),
}

/// Splits `a ${ x } b` into text and expressions. Braces and quotes inside an expression
/// are tracked, so `${ {'k': '}'}.k }` is one expression.
pub fn split_template(s: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            if text_start < i {
                parts.push(Part::Text(&s[text_start..i]));
            }
            let start = i + 2;
            let mut depth = 1;
            let mut j = start;
            let mut quote: Option<u8> = None;
            while j < bytes.len() && depth > 0 {
                let c = bytes[j];
                match quote {
                    Some(_) if c == b'\\' => j += 1,
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None => match c {
                        b'\'' | b'"' => quote = Some(c),
                        b'{' => depth += 1,
                        b'}' => depth -= 1,
                        _ => {}
                    },
                }
                j += 1;
            }
            if depth > 0 {
                return Err(format!("`${{` at byte {i} is never closed by `}}`"));
            }
            let expr = s[start..j - 1].trim();
            if expr.is_empty() {
                return Err(format!("`${{}}` at byte {i} is empty"));
            }
            parts.push(Part::Expr(expr));
            i = j;
            text_start = j;
        } else {
            i += 1;
        }
    }
    if text_start < s.len() {
        parts.push(Part::Text(&s[text_start..]));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps() -> BTreeMap<StepId, Value> {
        BTreeMap::from([(
            StepId::new("fetch").unwrap(),
            json!({"status": 200, "items": [1, 2, 3]}),
        )])
    }

    fn scope<'a>(
        input: &'a Value,
        vars: &'a BTreeMap<String, Value>,
        steps: &'a BTreeMap<StepId, Value>,
        run: &'a RunId,
    ) -> Scope<'a> {
        Scope {
            input,
            vars,
            steps: vec![steps],
            item: None,
            index: None,
            run: RunScope {
                id: run,
                tenant: "t",
                workflow: "w",
                version: 1,
            },
        }
    }

    #[test]
    fn templates_split_with_braces_and_quotes_inside() {
        assert_eq!(
            split_template("a ${ x } b").unwrap(),
            vec![Part::Text("a "), Part::Expr("x"), Part::Text(" b")]
        );
        assert_eq!(
            split_template("${ {'k': '}'}.k }").unwrap(),
            vec![Part::Expr("{'k': '}'}.k")]
        );
        assert!(split_template("${ x").unwrap_err().contains("never closed"));
        assert!(split_template("${ }").unwrap_err().contains("empty"));
        assert_eq!(
            split_template("no templates").unwrap(),
            vec![Part::Text("no templates")]
        );
    }

    #[test]
    fn whole_string_templates_keep_their_type_and_others_interpolate() {
        let mut ex = Expressions::default();
        let input = json!({"amount": 120, "name": "Ada"});
        let vars = BTreeMap::from([("n".to_owned(), json!(2))]);
        let doc = json!({
            "amount": "${ input.amount * vars.n }",
            "greeting": "Hello ${ input.name }, ${ size(steps.fetch.output.items) } items",
            "big": "${ input.amount > 100 }",
            "nested": ["${ steps.fetch.output.status }", 7]
        });
        ex.compile_template(&doc, false).unwrap();
        let (steps, run) = (steps(), RunId::random());
        let out = ex
            .render(&doc, &scope(&input, &vars, &steps, &run))
            .unwrap();
        assert_eq!(
            out,
            json!({"amount": 240, "greeting": "Hello Ada, 3 items", "big": true, "nested": [200, 7]})
        );
    }

    #[test]
    fn compile_errors_name_the_problem() {
        let mut ex = Expressions::default();
        assert!(ex.compile("input.a +", false).is_err());
        assert_eq!(
            ex.compile("secrets.token", false).unwrap_err(),
            "unknown variable `secrets`; expressions read input, vars, steps, run, and in a foreach item and index"
        );
        assert_eq!(
            ex.compile("item.id", false).unwrap_err(),
            "`item` exists only inside a foreach"
        );
        assert!(ex.compile("item.id", true).is_ok());
    }

    #[test]
    fn runtime_errors_name_the_expression() {
        let mut ex = Expressions::default();
        ex.compile("input.missing.deeper", false).unwrap();
        let input = json!({});
        let vars = BTreeMap::new();
        let (steps, run) = (steps(), RunId::random());
        let e = ex
            .eval("input.missing.deeper", &scope(&input, &vars, &steps, &run))
            .unwrap_err();
        assert_eq!(e.expr, "input.missing.deeper");
    }

    #[test]
    fn run_reads_its_fields_and_an_inner_frames_step_output_wins() {
        let mut ex = Expressions::default();
        let doc = json!({"run": "${ run }", "fetch": "${ steps.fetch.output }", "outer": "${ steps.outer.output }"});
        ex.compile_template(&doc, false).unwrap();
        let (input, vars) = (json!({}), BTreeMap::new());
        let outer = BTreeMap::from([
            (StepId::new("fetch").unwrap(), json!("outer")),
            (StepId::new("outer").unwrap(), json!(1)),
        ]);
        let (inner, run) = (steps(), RunId::random());
        let mut scope = scope(&input, &vars, &inner, &run);
        scope.steps.insert(0, &outer);
        assert_eq!(
            ex.render(&doc, &scope).unwrap(),
            json!({
                "run": {"id": run.to_string(), "tenant": "t", "workflow": "w", "version": 1},
                "fetch": {"status": 200, "items": [1, 2, 3]},
                "outer": 1
            })
        );
    }
}
