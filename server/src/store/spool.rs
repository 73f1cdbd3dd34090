//! Streams a request body to a local temporary file while hashing it, so a photo is never held
//! whole in memory and its hash is known before anything is committed.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use huikan_shared::Sha256Hex;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// How much of an oversized body is read and discarded before answering 413: a client that is
/// still sending only sees the answer if we read on; past this, the connection is closed.
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and discards the rest of a body (bounded in bytes and time), so the client gets to read
/// the error we answer instead of a broken pipe.
pub async fn drain<S, E>(body: &mut S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut drained: u64 = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            drained += chunk.len() as u64;
            if drained > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

/// How many leading bytes are kept for sniffing the file type.
const HEAD_LEN: usize = 64;
const WRITE_BUFFER: usize = 64 * 1024;

#[derive(Debug)]
pub struct Spooled {
    pub file: tempfile::TempPath,
    pub len: u64,
    pub sha256: Sha256Hex,
    /// The first bytes, for sniffing the type.
    pub head: Vec<u8>,
}

#[derive(Debug)]
pub enum SpoolError {
    /// More than the limit arrived; what arrived is discarded.
    TooLarge,
    /// The body broke off; what arrived before is kept in `partial`, if anything.
    Interrupted {
        partial: Option<Spooled>,
        error: String,
    },
    Io(std::io::Error),
}

impl From<std::io::Error> for SpoolError {
    fn from(e: std::io::Error) -> Self {
        SpoolError::Io(e)
    }
}

#[derive(Clone)]
pub struct SpoolDir(PathBuf);

impl SpoolDir {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(SpoolDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Removes temporary files older than `age`: what a killed process left behind. Younger ones
    /// may belong to uploads in flight, here or in another process sharing the directory.
    pub async fn remove_older_than(&self, age: std::time::Duration) -> std::io::Result<()> {
        let mut entries = tokio::fs::read_dir(&self.0).await?;
        while let Some(entry) = entries.next_entry().await? {
            let modified = entry.metadata().await?.modified()?;
            if modified.elapsed().is_ok_and(|elapsed| elapsed > age) {
                tokio::fs::remove_file(entry.path()).await.or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Writes the stream to a new temporary file, hashing as it goes; at most `limit` bytes.
    /// The stream is borrowed so that a caller refusing an oversized body can still drain it.
    pub async fn spool<S, E>(&self, body: &mut S, limit: u64) -> Result<Spooled, SpoolError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (file, path) = tempfile::NamedTempFile::new_in(&self.0)?.into_parts();
        let mut out =
            tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file));
        let mut hasher = Sha256::new();
        let mut head = Vec::with_capacity(HEAD_LEN);
        let mut len: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    out.flush().await?;
                    let partial = (len > 0).then(|| Spooled {
                        file: path,
                        len,
                        sha256: Sha256Hex::of_digest(&hasher.finalize()),
                        head,
                    });
                    return Err(SpoolError::Interrupted {
                        partial,
                        error: e.to_string(),
                    });
                }
            };
            len += chunk.len() as u64;
            if len > limit {
                return Err(SpoolError::TooLarge);
            }
            if head.len() < HEAD_LEN {
                let take = (HEAD_LEN - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok(Spooled {
            file: path,
            len,
            sha256: Sha256Hex::of_digest(&hasher.finalize()),
            head,
        })
    }
}
