use std::path::Path;

use object_store::path::Path as ObjectPath;

/// What can go wrong reaching the history's store. Every variant names the root or the
/// object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history root {root:?} {reason}")]
    Root { root: String, reason: String },
    #[error("cannot {op} {path} in the history store: {source}")]
    Store {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot {op} {path}: {source}")]
    Local {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the history I/O runtime: {0}")]
    Runtime(String),
}

impl StoreError {
    pub(crate) fn op(
        op: &'static str,
        path: &ObjectPath,
    ) -> impl FnOnce(object_store::Error) -> Self {
        let path = path.to_string();
        move |source| StoreError::Store { op, path, source }
    }

    pub(crate) fn local(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        StoreError::Local {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    /// Whether the object (or folder) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }
}
