//! Blocking reads and writes of the history's objects, for the sink's writer and
//! compaction, which run on blocking threads (they encode Parquet, CPU work that must
//! not hold an async worker).

use std::future::Future;
use std::path::Path;
use std::sync::LazyLock;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, PutMode, PutOptions, PutPayload,
};
use tokio::runtime::Runtime;

use crate::{HistoryLocation, StoreError, StoreKind};

/// The runtime the object store's requests run on. One per process and never dropped:
/// a runtime cannot be dropped from async code, and the writer that uses it may be.
static IO: LazyLock<Result<Runtime, String>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("aiq-history-io")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
});

/// Runs `fut` on the history I/O runtime and waits for it. Works from any thread that
/// may block (a plain thread or `spawn_blocking`), whatever runtime that thread belongs to.
fn wait<T: Send + 'static>(
    fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let rt = IO.as_ref().map_err(|e| StoreError::Runtime(e.clone()))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        // The receiver only goes away when the caller's thread died.
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| StoreError::Runtime("the history I/O task ended without an answer".into()))?
}

/// The entries directly under a folder, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<String>,
    pub folders: Vec<String>,
}

/// Blocking access to the objects under a history root. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HistoryFiles {
    location: HistoryLocation,
}

impl HistoryFiles {
    pub fn new(location: HistoryLocation) -> HistoryFiles {
        HistoryFiles { location }
    }

    pub fn location(&self) -> &HistoryLocation {
        &self.location
    }

    /// Writes `bytes` as the whole object at `rel`, replacing any older one. A reader
    /// sees the old object or the new one, never a part: object stores put whole
    /// objects, and on local disk the store writes a staging file and renames it. On
    /// local disk the file and its folder are then synced, so a committed offset never
    /// outlives the rows it covers in a power loss. `storage_class` is the access tier
    /// (Azure) or storage class (S3) of the new object; ignored on local disk.
    pub fn put(
        &self,
        rel: &ObjectPath,
        bytes: Bytes,
        storage_class: Option<&str>,
    ) -> Result<(), StoreError> {
        let store = self.location.files().clone();
        let path = rel.clone();
        let mut attributes = Attributes::new();
        if let Some(class) = storage_class.filter(|_| self.location.kind() != StoreKind::Local) {
            attributes.insert(Attribute::StorageClass, class.to_owned().into());
        }
        let new_dirs = self.local_dir(rel).is_some_and(|d| !d.is_dir());
        let opts = PutOptions {
            mode: PutMode::Overwrite,
            attributes,
            ..PutOptions::default()
        };
        wait(async move {
            store
                .put_opts(&path, PutPayload::from_bytes(bytes), opts)
                .await
                .map(drop)
                .map_err(StoreError::op("write", &path))
        })?;
        if let Some(root) = self.location.local_root() {
            sync_local(root, rel, new_dirs)?;
        }
        Ok(())
    }

    /// The whole object at `rel`.
    pub fn get(&self, rel: &ObjectPath) -> Result<Bytes, StoreError> {
        let store = self.location.files().clone();
        let path = rel.clone();
        wait(async move {
            let got = store
                .get_opts(&path, GetOptions::default())
                .await
                .map_err(StoreError::op("read", &path))?;
            got.bytes().await.map_err(StoreError::op("read", &path))
        })
    }

    /// The files and folders directly under `rel` (none when it does not exist).
    pub fn list(&self, rel: &ObjectPath) -> Result<Listing, StoreError> {
        let store = self.location.files().clone();
        let path = rel.clone();
        wait(async move {
            let found = store
                .list_with_delimiter(Some(&path))
                .await
                .map_err(StoreError::op("list", &path))?;
            let name = |p: &ObjectPath| p.filename().map(str::to_owned);
            let mut files: Vec<String> = found
                .objects
                .iter()
                .filter_map(|m| name(&m.location))
                .collect();
            let mut folders: Vec<String> = found.common_prefixes.iter().filter_map(name).collect();
            files.sort();
            folders.sort();
            Ok(Listing { files, folders })
        })
    }

    /// Every object under the folder `rel`, at any depth, sorted (relative to the root).
    pub fn walk(&self, rel: &ObjectPath) -> Result<Vec<ObjectPath>, StoreError> {
        let store = self.location.files().clone();
        let path = rel.clone();
        wait(async move {
            let mut all: Vec<ObjectPath> = store
                .list(Some(&path))
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .map_err(StoreError::op("list", &path))?;
            all.sort();
            Ok(all)
        })
    }

    /// How many objects, and how many bytes, are under the folder `rel`.
    pub fn usage(&self, rel: &ObjectPath) -> Result<(u64, u64), StoreError> {
        let store = self.location.files().clone();
        let path = rel.clone();
        wait(async move {
            store
                .list(Some(&path))
                .try_fold(
                    (0u64, 0u64),
                    |(n, b), m| async move { Ok((n + 1, b + m.size)) },
                )
                .await
                .map_err(StoreError::op("list", &path))
        })
    }

    /// Deletes the object at `rel`; one that is already gone is no error.
    pub fn delete(&self, rel: &ObjectPath) -> Result<(), StoreError> {
        let store = self.location.files().clone();
        let path = rel.clone();
        wait(async move {
            let named = path.clone();
            let one = futures::stream::once(async move { Ok(path) }).boxed();
            let mut out = store.delete_stream(one);
            while let Some(r) = out.next().await {
                match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(StoreError::op("delete", &named)(e)),
                }
            }
            Ok(())
        })
    }

    /// Deletes every object under the folder `rel`, then (on local disk) the folder.
    pub fn delete_folder(&self, rel: &ObjectPath) -> Result<(), StoreError> {
        let store = self.location.files().clone();
        let path = rel.clone();
        wait(async move {
            let listed = store.list(Some(&path)).map_ok(|m| m.location).boxed();
            store
                .delete_stream(listed)
                .try_for_each(|_| async { Ok(()) })
                .await
                .or_else(|e| match e {
                    object_store::Error::NotFound { .. } => Ok(()),
                    e => Err(e),
                })
                .map_err(StoreError::op("delete the folder", &path))
        })?;
        if let Some(dir) = self.local_dir(&rel.clone().join("x")) {
            // The store deletes files only; empty folders would still be listed.
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    if let Some(parent) = dir.parent() {
                        sync_dir(parent)?;
                    }
                }
                // Nothing was there: nothing to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::local("delete the folder", &dir, e)),
            }
        }
        Ok(())
    }

    /// Files a killed local write left behind (the store's `name#N` staging files and
    /// the `.`-prefixed temp files of earlier versions) in the folder `rel`; remote
    /// stores have none, an object put being whole or absent.
    pub fn remove_leftovers(&self, rel: &ObjectPath) -> Result<usize, StoreError> {
        let Some(dir) = self.local_dir(&rel.clone().join("x")) else {
            return Ok(0);
        };
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::local("list", &dir, e)),
        };
        let mut removed = 0;
        for entry in rd {
            let entry = entry.map_err(|e| StoreError::local("list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let staging = name
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if (staging || name.starts_with('.')) && entry.path().is_file() {
                std::fs::remove_file(entry.path())
                    .map_err(|e| StoreError::local("delete", &entry.path(), e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The local folder that holds `rel` when the history is on local disk.
    fn local_dir(&self, rel: &ObjectPath) -> Option<std::path::PathBuf> {
        let root = self.location.local_root()?;
        let mut dir = root.to_path_buf();
        let parts: Vec<_> = rel.parts().collect();
        for p in parts.iter().take(parts.len().saturating_sub(1)) {
            dir.push(p.as_ref());
        }
        Some(dir)
    }
}

fn sync_local(root: &Path, rel: &ObjectPath, new_dirs: bool) -> Result<(), StoreError> {
    let mut path = root.to_path_buf();
    for p in rel.parts() {
        path.push(p.as_ref());
    }
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::local("fsync", &path, e))?;
    // The file's folder always (the rename); the date and tenant folders when they were
    // created by this write.
    let mut dir = path.parent();
    for _ in 0..if new_dirs { 3 } else { 1 } {
        match dir {
            Some(d) if d.starts_with(root) => {
                sync_dir(d)?;
                dir = d.parent();
            }
            _ => break,
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::local("fsync the folder", dir, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn local() -> (tempfile::TempDir, HistoryFiles) {
        let dir = tempfile::tempdir().unwrap();
        let loc = HistoryLocation::local(&dir.path().join("root")).unwrap();
        (dir, HistoryFiles::new(loc))
    }

    #[test]
    fn put_get_list_and_delete_on_local_disk() {
        let (dir, files) = local();
        let a = ObjectPath::from("warm/runs/tenant=t/date=2026-01-01/a.parquet");
        files
            .put(&a, Bytes::from_static(b"one"), Some("Cool"))
            .unwrap();
        files.put(&a, Bytes::from_static(b"two"), None).unwrap();
        assert_eq!(files.get(&a).unwrap(), Bytes::from_static(b"two"));
        let day = ObjectPath::from("warm/runs/tenant=t/date=2026-01-01");
        assert_eq!(
            files.list(&day).unwrap().files,
            vec!["a.parquet".to_owned()]
        );
        assert_eq!(
            files.list(&ObjectPath::from("warm/runs")).unwrap().folders,
            vec!["tenant=t".to_owned()]
        );
        assert_eq!(
            files.list(&ObjectPath::from("nothing")).unwrap(),
            Listing::default()
        );
        // A staging file of a killed write is not listed, and is cleaned up.
        let disk_day = dir.path().join("root/warm/runs/tenant=t/date=2026-01-01");
        std::fs::write(disk_day.join("a.parquet#3"), b"half").unwrap();
        assert_eq!(files.list(&day).unwrap().files.len(), 1);
        assert_eq!(files.remove_leftovers(&day).unwrap(), 1);
        files.delete(&a).unwrap();
        files.delete(&a).unwrap();
        assert!(files.get(&a).is_err());
        files.put(&a, Bytes::from_static(b"three"), None).unwrap();
        files.delete_folder(&day).unwrap();
        assert!(!disk_day.exists());
        assert!(
            files
                .list(&ObjectPath::from("warm/runs/tenant=t"))
                .unwrap()
                .folders
                .is_empty()
        );
    }

    #[test]
    fn works_from_inside_another_runtime_blocking_thread() {
        let (_dir, files) = local();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let got = rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                let p = ObjectPath::from("x/y.bin");
                files.put(&p, Bytes::from_static(b"z"), None)?;
                files.get(&p)
            })
            .await
            .unwrap()
        });
        assert_eq!(got.unwrap(), Bytes::from_static(b"z"));
    }
}
