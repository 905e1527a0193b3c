//! One query's view of the history store, in which every file is read as it was listed.
//!
//! The sink rewrites an open window's file whole at each flush, and compaction and
//! erasure replace files. DataFusion lists a table's files (with their sizes) when it
//! plans a scan and reads their byte ranges later; a file replaced in between would be
//! read at the old size from the new bytes: a corrupt footer, a page that does not
//! decompress, or — worst — a page that decodes to rows that were never written. Here
//! each read names the version (the ETag) the listing saw, so the store refuses a
//! replaced file (412, or the local file system's own check) and a deleted one is not
//! found; either way the query learns from [`PinnedStore::changed`] that its listing is
//! stale, and runs again on a fresh one.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, Error, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Wraps the history store for one query (one attempt at it); never shared between
/// queries, so what it records lives as long as the query's own listing does.
#[derive(Debug)]
pub(crate) struct PinnedStore {
    inner: Arc<dyn ObjectStore>,
    pins: Arc<Pins>,
}

#[derive(Debug, Default)]
struct Pins {
    /// The ETag each listed file had. As large as the listing DataFusion holds anyway.
    tags: Mutex<HashMap<Path, String>>,
    changed: AtomicBool,
}

impl Pins {
    fn record(&self, meta: &ObjectMeta) {
        if let Some(tag) = &meta.e_tag {
            self.tags
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(meta.location.clone(), tag.clone());
        }
    }

    fn tag(&self, location: &Path) -> Option<String> {
        self.tags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(location)
            .cloned()
    }
}

impl PinnedStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> PinnedStore {
        PinnedStore {
            inner,
            pins: Arc::default(),
        }
    }

    /// Whether a file this query listed was replaced or deleted before it was read.
    pub(crate) fn changed(&self) -> bool {
        self.pins.changed.load(Ordering::Relaxed)
    }
}

impl fmt::Display for PinnedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pinned({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for PinnedStore {
    async fn get_opts(&self, location: &Path, mut options: GetOptions) -> Result<GetResult> {
        let pinned = self.pins.tag(location);
        if options.if_match.is_none() {
            options.if_match.clone_from(&pinned);
        }
        let result = self.inner.get_opts(location, options).await;
        if pinned.is_some()
            && matches!(
                result,
                Err(Error::Precondition { .. } | Error::NotFound { .. })
            )
        {
            self.pins.changed.store(true, Ordering::Relaxed);
        }
        result
    }

    // `get_ranges` is left to the trait: it reads each range through `get_opts` above.

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let pins = Arc::clone(&self.pins);
        self.inner
            .list(prefix)
            .inspect_ok(move |meta| pins.record(meta))
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let pins = Arc::clone(&self.pins);
        self.inner
            .list_with_offset(prefix, offset)
            .inspect_ok(move |meta| pins.record(meta))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix).await?;
        for meta in &listed.objects {
            self.pins.record(meta);
        }
        Ok(listed)
    }

    // A query only reads; writes pass through untouched.

    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;

    use super::*;

    async fn listed(store: &PinnedStore) -> Vec<ObjectMeta> {
        store.list(None).try_collect().await.unwrap()
    }

    async fn a_replaced_file_is_refused_and_noted(inner: Arc<dyn ObjectStore>) {
        let path = Path::from("warm/runs/date=2026-12-06/p0.parquet");
        inner.put(&path, "first".into()).await.unwrap();
        let other = Path::from("warm/runs/date=2026-12-06/p1.parquet");
        inner.put(&other, "kept".into()).await.unwrap();

        let store = PinnedStore::new(Arc::clone(&inner));
        assert_eq!(listed(&store).await.len(), 2);
        // Read as listed: the bytes come back and nothing is noted.
        assert_eq!(store.get_range(&path, 0..5).await.unwrap(), "first");
        assert!(!store.changed());

        inner.put(&path, "second, longer".into()).await.unwrap();
        let err = store.get_range(&path, 0..5).await.unwrap_err();
        assert!(matches!(err, Error::Precondition { .. }), "{err}");
        assert!(store.changed());
        // A file that did not change still reads.
        assert_eq!(store.get_range(&other, 0..4).await.unwrap(), "kept");

        // A fresh listing (the next attempt) reads the new file whole.
        let again = PinnedStore::new(Arc::clone(&inner));
        listed(&again).await;
        assert_eq!(
            again.get(&path).await.unwrap().bytes().await.unwrap(),
            "second, longer"
        );
        assert!(!again.changed());
    }

    #[tokio::test]
    async fn a_file_replaced_after_the_listing_is_refused_in_memory() {
        a_replaced_file_is_refused_and_noted(Arc::new(InMemory::new())).await;
    }

    #[tokio::test]
    async fn a_file_replaced_after_the_listing_is_refused_on_the_local_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        a_replaced_file_is_refused_and_noted(Arc::new(local)).await;
    }

    #[tokio::test]
    async fn a_file_deleted_after_the_listing_is_noted() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("warm/steps/p0.parquet");
        inner.put(&path, "x".into()).await.unwrap();
        let store = PinnedStore::new(Arc::clone(&inner));
        listed(&store).await;
        inner.delete(&path).await.unwrap();
        assert!(store.get(&path).await.is_err());
        assert!(store.changed());
    }

    #[tokio::test]
    async fn a_file_never_listed_is_read_unpinned() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("warm/runs/p0.parquet");
        inner.put(&path, "x".into()).await.unwrap();
        let store = PinnedStore::new(Arc::clone(&inner));
        inner.put(&path, "y".into()).await.unwrap();
        assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap(), "y");
        let missing = Path::from("warm/runs/none.parquet");
        assert!(store.get(&missing).await.is_err());
        assert!(!store.changed(), "only a listed file can have changed");
    }
}
