//! Blob stores: where photo bytes live, as files under the data dir or in any S3 API. Both take
//! a fully written, verified local temporary file and make it an object atomically, so a crash
//! at any instant leaves either no object or a whole one.

mod fs;
mod s3;
pub mod spool;

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use fs::FsStore;
pub use s3::S3Store;

pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// The blob store did not answer (or failed on its side): nothing was stored, and the request
/// may be made again later. Answered 503 (see `error::unavailable`).
#[derive(Debug, thiserror::Error)]
#[error("{what}: the photo store does not answer")]
pub struct Unavailable {
    pub what: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// Makes the local file the object at `key`, durably. Replacing an existing object with the
    /// same bytes is harmless, which is what two concurrent uploads of one photo do.
    async fn commit(&self, key: &str, file: tempfile::TempPath, len: u64) -> anyhow::Result<()>;

    /// Like `commit`, for objects derived from others and made again if lost (thumbnails): a
    /// store may skip what makes `commit` durable.
    async fn commit_derived(
        &self,
        key: &str,
        file: tempfile::TempPath,
        len: u64,
    ) -> anyhow::Result<()> {
        self.commit(key, file, len).await
    }

    /// The object's bytes and length, or `None` if there is no such object.
    async fn open(&self, key: &str) -> anyhow::Result<Option<(ByteStream, u64)>>;

    /// A short-lived URL a client can fetch the object from directly, where the store has one.
    async fn presigned_get(
        &self,
        key: &str,
        content_type: &str,
        ttl: Duration,
    ) -> anyhow::Result<Option<String>>;

    /// Removes the object; removing a missing object is not an error.
    async fn remove(&self, key: &str) -> anyhow::Result<()>;

    /// Whether the store answers.
    async fn health(&self) -> anyhow::Result<()>;

    /// Where the object is as a local file, for stores that keep files.
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }
}

/// Where a photo's bytes live, sharded by the first bytes of its hash.
pub fn blob_key(sha256: &str) -> String {
    format!("blobs/{}/{}/{}", &sha256[0..2], &sha256[2..4], sha256)
}
