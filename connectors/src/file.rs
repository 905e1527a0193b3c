//! The file connector: read, write and list files under the tenant's own root
//! (`<worker.file_root>/<tenant>`). A path is relative to that root and can never leave
//! it: absolute paths and `..` are refused before any I/O, and the resolved parent
//! directory must still lie inside the root, so a symlink cannot lead out either.

use std::path::{Component, Path, PathBuf};

use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::call::{CallContext, CallFuture, Connector};
use crate::outcome::fatal;

pub struct FileConnector {
    root: PathBuf,
}

impl FileConnector {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

fn io_error(path: &str, e: &std::io::Error) -> TaskOutcome {
    match e.kind() {
        std::io::ErrorKind::NotFound => fatal(format!("file connector: {path:?} does not exist")),
        std::io::ErrorKind::PermissionDenied => {
            fatal(format!("file connector: {path:?}: permission denied"))
        }
        _ => TaskOutcome::Error {
            class: ErrorClass::Retryable,
            message: format!("file connector: {path:?}: {e}"),
        },
    }
}

/// `args.path` checked to stay below the tenant root; the error names the field.
fn relative(args: &Value) -> Result<(String, PathBuf), TaskOutcome> {
    let Some(path) = args.get("path").and_then(Value::as_str) else {
        return Err(fatal(
            "file connector: `args.path` is required (a relative path)",
        ));
    };
    let mut rel = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            _ => {
                return Err(fatal(format!(
                    "file connector: `args.path` {path:?} must stay inside the tenant's folder \
                     (no absolute paths, no `..`)"
                )));
            }
        }
    }
    Ok((path.to_owned(), rel))
}

impl FileConnector {
    async fn run(&self, task: &TaskMessage) -> Result<Value, TaskOutcome> {
        let root = self.root.join(task.tenant.as_str());
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|e| io_error(".", &e))?;
        let root = tokio::fs::canonicalize(&root)
            .await
            .map_err(|e| io_error(".", &e))?;
        let args = &task.args;
        let op = args.get("op").and_then(Value::as_str).unwrap_or("read");
        let (shown, rel) = relative(args)?;
        let full = root.join(&rel);
        // The deepest existing ancestor must resolve inside the root (symlinks).
        let mut probe = full.clone();
        while !tokio::fs::try_exists(&probe).await.unwrap_or(false) {
            if !probe.pop() {
                break;
            }
        }
        let resolved = tokio::fs::canonicalize(&probe)
            .await
            .map_err(|e| io_error(&shown, &e))?;
        if !resolved.starts_with(&root) {
            return Err(fatal(format!(
                "file connector: `args.path` {shown:?} leads outside the tenant's folder"
            )));
        }
        match op {
            "read" => {
                let bytes = tokio::fs::read(&full)
                    .await
                    .map_err(|e| io_error(&shown, &e))?;
                let (content, encoding) = match String::from_utf8(bytes.clone()) {
                    Ok(s) => (s, "utf8"),
                    Err(_) => (
                        base64::engine::general_purpose::STANDARD.encode(&bytes),
                        "base64",
                    ),
                };
                Ok(
                    json!({"path": shown, "bytes": bytes.len(), "encoding": encoding, "content": content}),
                )
            }
            "write" => {
                let content = args.get("content").and_then(Value::as_str).ok_or_else(|| {
                    fatal("file connector: `args.content` (a string) is required to write")
                })?;
                let bytes = match args.get("encoding").and_then(Value::as_str) {
                    Some("base64") => base64::engine::general_purpose::STANDARD
                        .decode(content)
                        .map_err(|e| {
                            fatal(format!("file connector: `args.content` is not base64: {e}"))
                        })?,
                    None | Some("utf8") => content.as_bytes().to_vec(),
                    Some(other) => {
                        return Err(fatal(format!(
                            "file connector: `args.encoding` {other:?} is not utf8 or base64"
                        )));
                    }
                };
                if let Some(parent) = full.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| io_error(&shown, &e))?;
                }
                tokio::fs::write(&full, &bytes)
                    .await
                    .map_err(|e| io_error(&shown, &e))?;
                Ok(json!({"path": shown, "bytes": bytes.len()}))
            }
            "list" => {
                let mut dir = tokio::fs::read_dir(&full)
                    .await
                    .map_err(|e| io_error(&shown, &e))?;
                let mut entries = Vec::new();
                while let Some(e) = dir.next_entry().await.map_err(|e| io_error(&shown, &e))? {
                    let meta = e.metadata().await.map_err(|e| io_error(&shown, &e))?;
                    entries.push(json!({
                        "name": e.file_name().to_string_lossy(),
                        "dir": meta.is_dir(),
                        "bytes": meta.len(),
                    }));
                }
                entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                Ok(json!({"path": shown, "entries": entries}))
            }
            other => Err(fatal(format!(
                "file connector: `args.op` {other:?} is not read, write or list"
            ))),
        }
    }
}

impl Connector for FileConnector {
    fn call<'a>(&'a self, task: &'a TaskMessage, _ctx: &'a CallContext<'a>) -> CallFuture<'a> {
        Box::pin(async move {
            match self.run(task).await {
                Ok(output) => TaskOutcome::Ok { output },
                Err(e) => e,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiq_topics::{RunId, StepId, TenantId, WorkflowId};

    fn task(tenant: &str, args: Value) -> TaskMessage {
        let tenant = TenantId::new(tenant).unwrap();
        TaskMessage {
            run: RunId::from_idempotency_key(&tenant, &WorkflowId::new("w").unwrap(), "k"),
            tenant,
            step: StepId::new("s").unwrap(),
            attempt: 1,
            connector: "file".into(),
            args,
            timeout_ms: 1000,
            dispatched_at: chrono::Utc::now(),
            expires_at: None,
        }
    }

    impl FileConnector {
        async fn exec(&self, task: &TaskMessage) -> TaskOutcome {
            match self.run(task).await {
                Ok(output) => TaskOutcome::Ok { output },
                Err(e) => e,
            }
        }
    }

    fn root() -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!("aiq-file-test-{nanos}-{}", std::process::id()))
    }

    fn refused(o: &TaskOutcome, words: &str) {
        match o {
            TaskOutcome::Error { class, message } => {
                assert_eq!(*class, ErrorClass::Fatal, "{message}");
                assert!(message.contains(words), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn writes_reads_and_lists_inside_the_tenants_folder_only() {
        let dir = root();
        let c = FileConnector::new(&dir);
        let w = c
            .exec(&task(
                "acme",
                json!({"op": "write", "path": "out/report.txt", "content": "hello"}),
            ))
            .await;
        assert_eq!(
            w,
            TaskOutcome::Ok {
                output: json!({"path": "out/report.txt", "bytes": 5})
            }
        );
        let r = c
            .exec(&task("acme", json!({"path": "out/report.txt"})))
            .await;
        let TaskOutcome::Ok { output } = r else {
            panic!("{r:?}")
        };
        assert_eq!(output["content"], "hello");
        let l = c
            .exec(&task("acme", json!({"op": "list", "path": "out"})))
            .await;
        let TaskOutcome::Ok { output } = l else {
            panic!("{l:?}")
        };
        assert_eq!(output["entries"][0]["name"], "report.txt");
        // Another tenant has a folder of its own: the same path is not there.
        refused(
            &c.exec(&task("globex", json!({"path": "out/report.txt"})))
                .await,
            "does not exist",
        );
        // No way out.
        for bad in ["../acme/out/report.txt", "/etc/passwd", "out/../../x"] {
            refused(
                &c.exec(&task("globex", json!({"path": bad}))).await,
                "must stay inside the tenant's folder",
            );
        }
        std::fs::create_dir_all(dir.join("globex")).unwrap();
        std::os::unix::fs::symlink(dir.join("acme"), dir.join("globex/link")).unwrap();
        refused(
            &c.exec(&task("globex", json!({"path": "link/out/report.txt"})))
                .await,
            "leads outside the tenant's folder",
        );
        refused(
            &c.exec(&task("acme", json!({"op": "delete", "path": "x"})))
                .await,
            "is not read, write or list",
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
