//! Signed statements about the chain: "the log's head was entry `seq` with hash `head_hash` at
//! `at`", signed with the server's ed25519 key. Checkpoints pin the log as of a time; an export
//! bundle carries one that also names its manifest. Anyone holding the public key checks them
//! without the server.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// What is signed: the JCS text of this statement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Statement {
    pub at: String,
    pub head_hash: String,
    pub seq: i64,
    pub public_key: String,
    /// For an export: the SHA-256 of its `manifest.json` and what it covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Statement {
    fn signed_text(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        huikan_shared::content::canonical_json(&value)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Signed {
    #[serde(flatten)]
    pub statement: Statement,
    /// The ed25519 signature of the statement's JCS text, hex.
    pub signature: String,
}

impl Signed {
    /// Whether the signature is the statement's under the public key it names.
    pub fn verify(&self) -> Result<(), String> {
        let key: [u8; 32] = hex::decode(&self.statement.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the public key is not 32 bytes of hex")?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| "the public key is not valid")?;
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the signature is not 64 bytes of hex")?;
        key.verify(
            self.statement.signed_text().as_bytes(),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| "the signature does not match the statement".to_owned())
    }
}

/// The server's signing key.
pub struct Signer {
    key: SigningKey,
    public_key: String,
}

impl Signer {
    /// Reads the key (64 hex digits) from `path`, or creates it there, readable by the owner
    /// only, when there is no such file yet.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Signer> {
        let seed = match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok());
                bytes.with_context(|| {
                    format!(
                        "{} does not hold an audit signing key (64 hex digits)",
                        path.display()
                    )
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let seed: [u8; 32] = rand::random();
                write_private(path, &hex::encode(seed)).with_context(|| {
                    format!("creating the audit signing key {}", path.display())
                })?;
                tracing::info!(path = %path.display(), "created an audit signing key");
                seed
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", path.display()));
            }
        };
        Ok(Signer::from_seed(&seed))
    }

    pub fn from_seed(seed: &[u8; 32]) -> Signer {
        let key = SigningKey::from_bytes(seed);
        let public_key = hex::encode(key.verifying_key().to_bytes());
        Signer { key, public_key }
    }

    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Signs that the head was `(seq, head_hash)`, now.
    pub fn sign(
        &self,
        seq: i64,
        head_hash: &str,
        manifest_sha256: Option<String>,
        scope: Option<String>,
    ) -> Signed {
        let statement = Statement {
            at: crate::db::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            head_hash: head_hash.to_owned(),
            seq,
            public_key: self.public_key.clone(),
            manifest_sha256,
            scope,
        };
        let signature = hex::encode(self.key.sign(statement.signed_text().as_bytes()).to_bytes());
        Signed {
            statement,
            signature,
        }
    }
}

/// Writes a new file only its owner can read, durably.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{text}")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_statement_verifies_and_any_change_breaks_it() {
        let signer = Signer::from_seed(&[7; 32]);
        let signed = signer.sign(42, &"ab".repeat(32), Some("cd".repeat(32)), None);
        assert_eq!(signed.verify(), Ok(()));

        let mut moved = signed.clone();
        moved.statement.seq = 43;
        assert!(moved.verify().is_err());

        let mut other_key = signed.clone();
        other_key.statement.public_key = Signer::from_seed(&[8; 32]).public_key().to_owned();
        assert!(other_key.verify().is_err());

        let text = serde_json::to_string(&signed).unwrap();
        let back: Signed = serde_json::from_str(&text).unwrap();
        assert_eq!(back.verify(), Ok(()));
    }

    #[test]
    fn the_key_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit.key");
        let first = Signer::load_or_create(&path).unwrap();
        let again = Signer::load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        std::fs::write(&path, "not a key").unwrap();
        assert!(Signer::load_or_create(&path).is_err());
    }
}
