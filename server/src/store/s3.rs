//! Photos in any S3 API (AWS, MinIO, Ceph, emulators): path-style addressing, custom endpoint.
//! Commit uploads the verified local file; GET is answered with a short-lived presigned URL.

use std::time::Duration;

use anyhow::Context;

use super::Unavailable;
use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use futures::TryStreamExt;
use tokio_util::io::ReaderStream;

use super::{BlobStore, ByteStream};
use crate::config::S3Config;

pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    /// Connects and makes sure the bucket exists (creating it if the store has none by that
    /// name, which is what a fresh MinIO or emulator needs).
    pub async fn connect(endpoint: &str, config: &S3Config) -> anyhow::Result<Self> {
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.s3_region.clone()))
            .load()
            .await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .endpoint_url(endpoint)
            .force_path_style(true)
            // A store that stops answering is a 503 within seconds, not a request hanging:
            // connecting is quick or failed; a read may wait (a minute by default) while a
            // large object is taken in.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(config.s3_read_timeout_secs))
                    .build(),
            );
        if config.s3_checksums_when_required {
            builder = builder
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let store = S3Store {
            client: Client::from_conf(builder.build()),
            bucket: config.s3_bucket.clone(),
        };
        store.ensure_bucket().await?;
        Ok(store)
    }

    async fn ensure_bucket(&self) -> anyhow::Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => {
                tracing::info!(bucket = %self.bucket, "creating the S3 bucket");
                self.client
                    .create_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .with_context(|| format!("creating bucket {}", self.bucket))?;
                Ok(())
            }
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("reaching bucket {}", self.bucket)))
            }
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    async fn commit(&self, key: &str, file: tempfile::TempPath, len: u64) -> anyhow::Result<()> {
        let body = S3Body::from_path(&file)
            .await
            .context("reading the spooled file")?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(len as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| failure(e, format!("uploading {key} to S3")))?;
        drop(file);
        Ok(())
    }

    async fn open(&self, key: &str) -> anyhow::Result<Option<(ByteStream, u64)>> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => return Ok(None),
            Err(e) => return Err(failure(e, format!("reading {key} from S3"))),
        };
        let len = output.content_length().unwrap_or_default().max(0) as u64;
        let reader = output.body.into_async_read();
        let stream = ReaderStream::with_capacity(reader, 64 * 1024).map_err(std::io::Error::other);
        Ok(Some((Box::pin(stream), len)))
    }

    async fn presigned_get(
        &self,
        key: &str,
        content_type: &str,
        ttl: Duration,
    ) -> anyhow::Result<Option<String>> {
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_type(content_type)
            .presigned(PresigningConfig::expires_in(ttl)?)
            .await
            .context("presigning a photo URL")?;
        Ok(Some(request.uri().to_string()))
    }

    async fn remove(&self, key: &str) -> anyhow::Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failure(e, format!("removing {key} from S3")))?;
        Ok(())
    }

    async fn health(&self) -> anyhow::Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .with_context(|| format!("reaching bucket {}", self.bucket))?;
        Ok(())
    }
}

/// An S3 error as ours: S3 not answering, or answering 5xx, is [`Unavailable`] (a 503 the
/// client retries later); anything else stays an internal error.
fn failure<E>(e: SdkError<E, HttpResponse>, what: String) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let transient = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => service.raw().status().is_server_error(),
        _ => false,
    };
    if transient {
        anyhow::Error::new(Unavailable {
            what,
            source: Box::new(e),
        })
    } else {
        anyhow::Error::new(e).context(what)
    }
}
