//! A test-only object store that fails what a test asks for and counts what it saw (parts,
//! aborts, completions, refused deletes), around a real store, so the archiver's and the
//! export copy's behaviour when the store fails midway can be checked without a network.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the store refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every request is passed through (the store only counts).
    Nothing,
    /// Every multipart upload takes this many parts, then refuses each further one.
    PartsAfter(usize),
    /// Every delete is refused (the object stays).
    Deletes,
}

/// What the store was asked to do, counted over every upload.
#[derive(Debug, Default)]
pub struct Seen {
    pub parts_accepted: AtomicUsize,
    pub parts_refused: AtomicUsize,
    pub aborts: AtomicUsize,
    pub completions: AtomicUsize,
    pub deletes_refused: AtomicUsize,
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    fault: Fault,
    pub seen: Arc<Seen>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, fault: Fault) -> FaultyStore {
        FaultyStore {
            inner,
            fault,
            seen: Arc::new(Seen::default()),
        }
    }
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultyStore({:?}, {})", self.fault, self.inner)
    }
}

fn refused(what: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: what.into(),
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        let parts_max = match self.fault {
            Fault::PartsAfter(parts) => parts,
            Fault::Nothing | Fault::Deletes => usize::MAX,
        };
        Ok(Box::new(FaultyUpload {
            inner,
            location: location.clone(),
            parts_max,
            parts_started: 0,
            seen: self.seen.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        if self.fault != Fault::Deletes {
            return self.inner.delete_stream(locations);
        }
        let seen = self.seen.clone();
        locations
            .map(move |location| {
                seen.deletes_refused.fetch_add(1, Ordering::SeqCst);
                Err(refused(format!("the delete of {} is refused", location?)))
            })
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload that refuses every part after `parts_max`.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    location: ObjectPath,
    parts_max: usize,
    parts_started: usize,
    seen: Arc<Seen>,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts_started += 1;
        if self.parts_started > self.parts_max {
            self.seen.parts_refused.fetch_add(1, Ordering::SeqCst);
            let error = refused(format!(
                "part {} of {} is refused",
                self.parts_started, self.location
            ));
            return Box::pin(async move { Err(error) });
        }
        self.seen.parts_accepted.fetch_add(1, Ordering::SeqCst);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.seen.completions.fetch_add(1, Ordering::SeqCst);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.seen.aborts.fetch_add(1, Ordering::SeqCst);
        self.inner.abort().await
    }
}
