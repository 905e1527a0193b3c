//! Parsing a history root (`data/history`, `file:///srv/history`, `az://container/prefix`,
//! `s3://bucket/prefix`) into the stores that reach it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::StoreError;

/// Where the history lives, as configured: a folder path, or a `file://`, `az://`
/// (also `abfs://`, `abfss://`, `azure://`) or `s3://` URL. Kept as written; [`parse`]
/// (Self::parse) checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HistoryRoot(String);

impl HistoryRoot {
    pub fn new(root: impl Into<String>) -> HistoryRoot {
        HistoryRoot(root.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The local folder this root names, if it names one (a plain path or `file://`).
    pub fn local_path(&self) -> Option<PathBuf> {
        match scheme_of(&self.0) {
            None => Some(PathBuf::from(&self.0)),
            Some("file") => Url::parse(&self.0).ok()?.to_file_path().ok(),
            Some(_) => None,
        }
    }

    /// Builds the stores that reach this root. Cloud credentials come from `options`
    /// (object_store's configuration keys, such as `azure_storage_account_key` or
    /// `aws_secret_access_key`) over the process environment (`AZURE_*`, `AWS_*`), so
    /// that a secret need not be written into a configuration file. Nothing is
    /// contacted yet: a wrong key or an unreachable store fails at the first request.
    pub fn parse(&self, options: &BTreeMap<String, String>) -> Result<HistoryLocation, StoreError> {
        let root = self.0.trim();
        if root.is_empty() {
            return Err(StoreError::Root {
                root: self.0.clone(),
                reason: "must not be empty".into(),
            });
        }
        match scheme_of(root) {
            None | Some("file") => {
                let path = self.local_path().ok_or_else(|| StoreError::Root {
                    root: self.0.clone(),
                    reason: "is not a usable file:// URL".into(),
                })?;
                HistoryLocation::local(&path)
            }
            Some(scheme @ ("az" | "abfs" | "abfss" | "azure" | "adl" | "s3" | "s3a")) => {
                let url = Url::parse(root).map_err(|e| StoreError::Root {
                    root: self.0.clone(),
                    reason: e.to_string(),
                })?;
                HistoryLocation::remote(scheme, &url, options, &self.0)
            }
            Some(other) => Err(StoreError::Root {
                root: self.0.clone(),
                reason: format!(
                    "the scheme {other:?} is not supported (a path, file://, az:// or s3://)"
                ),
            }),
        }
    }
}

impl Default for HistoryRoot {
    fn default() -> Self {
        HistoryRoot::new("data/history")
    }
}

impl fmt::Display for HistoryRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Path> for HistoryRoot {
    fn from(p: &Path) -> Self {
        HistoryRoot(p.to_string_lossy().into_owned())
    }
}

impl From<PathBuf> for HistoryRoot {
    fn from(p: PathBuf) -> Self {
        HistoryRoot::from(p.as_path())
    }
}

impl From<&str> for HistoryRoot {
    fn from(s: &str) -> Self {
        HistoryRoot::new(s)
    }
}

/// A scheme is letters before `://`; anything else (a Windows drive letter aside, which
/// this project does not run on) is a path.
fn scheme_of(root: &str) -> Option<&str> {
    let (scheme, _) = root.split_once("://")?;
    (!scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric())).then_some(scheme)
}

/// What kind of store holds the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    Azure,
    S3,
}

/// The history's stores, ready to use.
#[derive(Clone)]
pub struct HistoryLocation {
    kind: StoreKind,
    /// Paths relative to the root: what the sink and compaction use.
    files: Arc<dyn ObjectStore>,
    /// The whole store (container, bucket, or the file system) as DataFusion reads it.
    whole: Arc<dyn ObjectStore>,
    /// `scheme://authority/` under which `whole` is registered with DataFusion.
    store_url: Url,
    /// The root as a folder URL of `whole` (ends with `/`).
    base: Url,
    local_root: Option<PathBuf>,
}

/// Per-request bounds of the cloud clients. The defaults (10 retries over up to three
/// minutes) would hold a sink flush that long before it reports the store unreachable;
/// the sink retries whole flushes anyway, so each try fails fast.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(15);

/// The request bounds as client options, under the caller's own (which win). Options,
/// not a `ClientOptions` value: that would replace what the environment configured.
fn with_client_defaults(options: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut all: BTreeMap<String, String> = [
        ("timeout", REQUEST_TIMEOUT),
        ("connect_timeout", CONNECT_TIMEOUT),
    ]
    .into_iter()
    .map(|(k, d)| (k.to_owned(), format!("{}s", d.as_secs())))
    .collect();
    all.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
    all
}

fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    }
}

impl HistoryLocation {
    /// A folder on this machine; created if missing, so that the store can resolve it.
    pub fn local(root: &Path) -> Result<HistoryLocation, StoreError> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::Root {
            root: root.display().to_string(),
            reason: format!("cannot create the folder: {e}"),
        })?;
        let abs = std::fs::canonicalize(root).map_err(|e| StoreError::Root {
            root: root.display().to_string(),
            reason: format!("cannot resolve the folder: {e}"),
        })?;
        let files = LocalFileSystem::new_with_prefix(&abs).map_err(|e| StoreError::Root {
            root: root.display().to_string(),
            reason: e.to_string(),
        })?;
        let base = Url::from_directory_path(&abs).map_err(|()| StoreError::Root {
            root: root.display().to_string(),
            reason: "is not an absolute folder path".into(),
        })?;
        Ok(HistoryLocation {
            kind: StoreKind::Local,
            files: Arc::new(files),
            whole: Arc::new(LocalFileSystem::new()),
            store_url: Url::parse("file:///").map_err(|e| StoreError::Root {
                root: "file:///".into(),
                reason: e.to_string(),
            })?,
            base,
            local_root: Some(abs),
        })
    }

    fn remote(
        scheme: &str,
        url: &Url,
        options: &BTreeMap<String, String>,
        written: &str,
    ) -> Result<HistoryLocation, StoreError> {
        let bad = |reason: String| StoreError::Root {
            root: written.to_owned(),
            reason,
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("names no container or bucket".into()))?;
        let (kind, whole): (StoreKind, Arc<dyn ObjectStore>) = if scheme.starts_with("s3") {
            let mut b = AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_retry(retry());
            for (k, v) in &with_client_defaults(options) {
                let key = k
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|_| bad(format!("{k:?} is not an S3 option of the object store")))?;
                b = b.with_config(key, v);
            }
            (
                StoreKind::S3,
                Arc::new(b.build().map_err(|e| bad(e.to_string()))?),
            )
        } else {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry());
            for (k, v) in &with_client_defaults(options) {
                let key = k.to_ascii_lowercase().parse().map_err(|_| {
                    bad(format!("{k:?} is not an Azure option of the object store"))
                })?;
                b = b.with_config(key, v);
            }
            (
                StoreKind::Azure,
                Arc::new(b.build().map_err(|e| bad(e.to_string()))?),
            )
        };
        // abfss://container@account.dfs.core.windows.net/… names the container before the @.
        let store_url = Url::parse(&format!("{}://{}{}/", url.scheme(), user_at(url), host))
            .map_err(|e| bad(e.to_string()))?;
        let prefix = ObjectPath::from_url_path(url.path()).map_err(|e| bad(e.to_string()))?;
        let mut base = store_url.clone();
        if !prefix.as_ref().is_empty() {
            base.set_path(&format!("/{}/", prefix.as_ref()));
        }
        Ok(HistoryLocation {
            kind,
            files: Arc::new(PrefixStore::new(Arc::clone(&whole), prefix)),
            whole,
            store_url,
            base,
            local_root: None,
        })
    }

    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// The store with paths relative to the root.
    pub fn files(&self) -> &Arc<dyn ObjectStore> {
        &self.files
    }

    /// The whole store, to register with DataFusion under [`store_url`](Self::store_url).
    pub fn whole_store(&self) -> &Arc<dyn ObjectStore> {
        &self.whole
    }

    /// `scheme://authority/` of the whole store.
    pub fn store_url(&self) -> &Url {
        &self.store_url
    }

    /// The URL of a folder under the root (`rel` like `warm/steps/tenant=acme`), ending
    /// with `/`, as DataFusion lists it. Each segment is percent-encoded as the store
    /// writes it, so that no character of a tenant id is read as a glob or a separator.
    pub fn folder_url(&self, rel: &ObjectPath) -> Url {
        let mut url = self.base.clone();
        {
            let mut segs = match url.path_segments_mut() {
                Ok(s) => s,
                // base always has a path (file:/// or scheme://host/…)
                Err(()) => return self.base.clone(),
            };
            segs.pop_if_empty();
            for part in rel.parts() {
                segs.push(part.as_ref());
            }
            segs.push("");
        }
        url
    }

    /// The folder on this machine when the history is local.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }
}

fn user_at(url: &Url) -> String {
    if url.username().is_empty() {
        String::new()
    } else {
        format!("{}@", url.username())
    }
}

impl fmt::Debug for HistoryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the stores themselves: their Debug may carry credentials.
        f.debug_struct("HistoryLocation")
            .field("kind", &self.kind)
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl fmt::Display for HistoryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn plain_paths_and_file_urls_are_local() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("h");
        let loc = HistoryRoot::from(root.as_path())
            .parse(&BTreeMap::new())
            .unwrap();
        assert_eq!(loc.kind(), StoreKind::Local);
        assert!(root.is_dir(), "the folder is created");
        let url = format!("file://{}", root.display());
        let again = HistoryRoot::new(url).parse(&BTreeMap::new()).unwrap();
        assert_eq!(again.local_root(), loc.local_root());
        let folder = loc.folder_url(&ObjectPath::from("warm/steps/tenant=a b"));
        assert!(
            folder.as_str().ends_with("/h/warm/steps/tenant=a%20b/"),
            "{folder}"
        );
    }

    #[test]
    fn azure_and_s3_urls_name_their_container_and_prefix() {
        let opts: BTreeMap<String, String> = [
            ("azure_storage_account_name".to_owned(), "acct".to_owned()),
            ("azure_storage_account_key".to_owned(), "a2V5".to_owned()),
        ]
        .into();
        let az = HistoryRoot::new("az://history/prod/h")
            .parse(&opts)
            .unwrap();
        assert_eq!(az.kind(), StoreKind::Azure);
        assert_eq!(az.store_url().as_str(), "az://history/");
        assert_eq!(
            az.folder_url(&ObjectPath::from("warm/runs")).as_str(),
            "az://history/prod/h/warm/runs/"
        );
        let s3_opts: BTreeMap<String, String> = [
            ("aws_region".to_owned(), "eu-west-1".to_owned()),
            (
                "aws_endpoint".to_owned(),
                "http://127.0.0.1:9000".to_owned(),
            ),
        ]
        .into();
        let s3 = HistoryRoot::new("s3://bucket").parse(&s3_opts).unwrap();
        assert_eq!(s3.kind(), StoreKind::S3);
        assert_eq!(
            s3.folder_url(&ObjectPath::from("warm/runs")).as_str(),
            "s3://bucket/warm/runs/"
        );
    }

    #[test]
    fn bad_roots_name_the_reason() {
        let none = BTreeMap::new();
        for (root, why) in [
            ("", "must not be empty"),
            ("gs://bucket/x", "not supported"),
            ("az:///nothing", "container"),
        ] {
            let e = HistoryRoot::new(root).parse(&none).unwrap_err().to_string();
            assert!(e.contains(why), "{root}: {e}");
        }
        let bad_key: BTreeMap<String, String> = [("colour".to_owned(), "blue".to_owned())].into();
        let e = HistoryRoot::new("az://c/p")
            .parse(&bad_key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn roots_deserialise_from_a_string() {
        let r: HistoryRoot = serde_json::from_str(r#""az://c/p""#).unwrap();
        assert_eq!(r.as_str(), "az://c/p");
        assert_eq!(r.local_path(), None);
        assert_eq!(
            HistoryRoot::new("/srv/h").local_path(),
            Some(PathBuf::from("/srv/h"))
        );
    }
}
