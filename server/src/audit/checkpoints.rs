//! Checkpoints: the chain head signed at intervals and kept in `audit_checkpoints`, so an
//! auditor can pin "the log as of" a time, and verification catches a chain rewritten
//! consistently from some entry on (its hashes no longer match what was signed).

use super::signing::{Signed, Signer, Statement};
use crate::db::Db;
use crate::error::Result;
use crate::on_pool;

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    head_hash: String,
    at: String,
    public_key: String,
    signature: String,
}

impl From<Row> for Signed {
    fn from(r: Row) -> Signed {
        Signed {
            statement: Statement {
                at: r.at,
                head_hash: r.head_hash,
                seq: r.seq,
                public_key: r.public_key,
                manifest_sha256: None,
                scope: None,
            },
            signature: r.signature,
        }
    }
}

/// The current head, `(seq, hash)`.
pub async fn head(db: &Db) -> Result<(i64, String)> {
    Ok(on_pool!(&db.read, |p| {
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(p)
            .await
    })?)
}

/// Signs and keeps the head if it moved since this key's last checkpoint. Several server
/// processes may each do so; each checkpoint names its key.
pub async fn take(db: &Db, signer: &Signer) -> Result<Option<Signed>> {
    let (seq, hash) = head(db).await?;
    let last: Option<i64> = on_pool!(&db.read, |p| {
        sqlx::query_scalar("SELECT MAX(seq) FROM audit_checkpoints WHERE public_key = $1")
            .bind(signer.public_key())
            .fetch_one(p)
            .await
    })?;
    if seq == 0 || last.is_some_and(|last| last >= seq) {
        return Ok(None);
    }
    let signed = signer.sign(seq, &hash, None, None);
    let s = &signed.statement;
    on_pool!(&db.write, |p| {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, head_hash, at, public_key, signature)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(s.seq)
        .bind(&s.head_hash)
        .bind(&s.at)
        .bind(&s.public_key)
        .bind(&signed.signature)
        .execute(p)
        .await
        .map(|_| ())
    })?;
    Ok(Some(signed))
}

/// Checkpoints after entry `after`, in order, at most `limit`.
pub async fn list(db: &Db, after: i64, limit: i64) -> Result<Vec<Signed>> {
    let rows: Vec<Row> = on_pool!(&db.read, |p| {
        sqlx::query_as(
            "SELECT seq, head_hash, at, public_key, signature FROM audit_checkpoints
             WHERE seq > $1 ORDER BY seq, public_key LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(p)
        .await
    })?;
    Ok(rows.into_iter().map(Signed::from).collect())
}

/// Takes a checkpoint every `interval` for as long as the server runs.
pub async fn every(db: Db, signer: std::sync::Arc<Signer>, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match take(&db, &signer).await {
            Ok(Some(signed)) => tracing::debug!(seq = signed.statement.seq, "audit checkpoint"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = ?e, "taking an audit checkpoint"),
        }
    }
}
