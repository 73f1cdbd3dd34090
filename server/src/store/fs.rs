//! Photos as files under the data dir: `blobs/ab/cd/<sha256>`. Commit is fsync of the file,
//! rename into place, fsync of the directory.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use tokio_util::io::ReaderStream;

use super::{BlobStore, ByteStream};

pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub fn new(root: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        Ok(FsStore { root })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait::async_trait]
impl BlobStore for FsStore {
    async fn commit(&self, key: &str, file: tempfile::TempPath, _len: u64) -> anyhow::Result<()> {
        let dest = self.path(key);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            std::fs::File::open(&file)?.sync_all()?;
            let dir = dest.parent().context("blob key without a directory")?;
            std::fs::create_dir_all(dir)?;
            file.persist(&dest)
                .with_context(|| format!("renaming into {}", dest.display()))?;
            sync_dir(dir)?;
            Ok(())
        })
        .await?
    }

    async fn commit_derived(
        &self,
        key: &str,
        file: tempfile::TempPath,
        _: u64,
    ) -> anyhow::Result<()> {
        let dest = self.path(key);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let dir = dest.parent().context("blob key without a directory")?;
            std::fs::create_dir_all(dir)?;
            file.persist(&dest)
                .with_context(|| format!("renaming into {}", dest.display()))?;
            Ok(())
        })
        .await?
    }

    async fn open(&self, key: &str) -> anyhow::Result<Option<(ByteStream, u64)>> {
        let file = match tokio::fs::File::open(self.path(key)).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata().await?.len();
        let stream = ReaderStream::with_capacity(file, 64 * 1024).map_err(io::Error::other);
        Ok(Some((Box::pin(stream), len)))
    }

    async fn presigned_get(&self, _: &str, _: &str, _: Duration) -> anyhow::Result<Option<String>> {
        Ok(None)
    }

    async fn remove(&self, key: &str) -> anyhow::Result<()> {
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn health(&self) -> anyhow::Result<()> {
        let meta = tokio::fs::metadata(&self.root).await?;
        anyhow::ensure!(meta.is_dir(), "{} is not a directory", self.root.display());
        Ok(())
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        Some(self.path(key))
    }
}
