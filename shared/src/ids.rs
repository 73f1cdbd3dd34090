//! Parsed newtypes for identifiers that arrive from outside.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::limits::quoted;

/// Lowercase hex SHA-256, the name of every stored photo.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("{} is not 64 lowercase hex characters", quoted(s)))
        }
    }

    pub fn of_digest(digest: &[u8]) -> Self {
        Self(hex::encode(digest))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A campaign (survey round) id: a slug `[a-z0-9-]{1,64}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CampaignId(String);

impl CampaignId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{} is not a campaign id ([a-z0-9-], 1 to 64 characters)",
                quoted(s)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CampaignId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A prefix of a 12-digit statistical division code: 2 to 12 digits. A 9-digit township prefix
/// covers its villages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DivisionPrefix(String);

impl DivisionPrefix {
    pub fn parse(s: &str) -> Result<Self, String> {
        if (2..=12).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{} is not a division code prefix (2 to 12 digits)",
                quoted(s)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this prefix covers the given division code.
    pub fn covers(&self, code: &str) -> bool {
        code.starts_with(&self.0)
    }
}

impl<'de> Deserialize<'de> for DivisionPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a UUID only in its canonical lowercase hyphenated form, as the contract requires.
pub fn parse_canonical_uuid(s: &str) -> Result<uuid::Uuid, String> {
    match uuid::Uuid::parse_str(s) {
        Ok(u) if u.hyphenated().to_string() == s => Ok(u),
        _ => Err(format!(
            "{} is not a UUID in canonical lowercase form",
            quoted(s)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_accepts_only_lowercase_hex_of_64() {
        let good = "a".repeat(64);
        assert!(Sha256Hex::parse(&good).is_ok());
        assert!(Sha256Hex::parse(&"A".repeat(64)).is_err());
        assert!(Sha256Hex::parse(&"a".repeat(63)).is_err());
        assert!(Sha256Hex::parse(&"g".repeat(64)).is_err());
    }

    #[test]
    fn campaign_id_is_a_slug() {
        assert!(CampaignId::parse("2020-lookback-1").is_ok());
        assert!(CampaignId::parse("").is_err());
        assert!(CampaignId::parse("Bad_Id").is_err());
        assert!(CampaignId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn division_prefix_covers_its_villages() {
        let township = DivisionPrefix::parse("410327101").unwrap();
        assert!(township.covers("410327101001"));
        assert!(!township.covers("410327102001"));
        assert!(DivisionPrefix::parse("4").is_err());
        assert!(DivisionPrefix::parse("41032710100a").is_err());
    }

    #[test]
    fn uuids_must_be_canonical() {
        assert!(parse_canonical_uuid("0190c3e2-7d3a-7b4c-9d1e-0123456789ab").is_ok());
        assert!(parse_canonical_uuid("0190C3E2-7D3A-7B4C-9D1E-0123456789AB").is_err());
        assert!(parse_canonical_uuid("0190c3e27d3a7b4c9d1e0123456789ab").is_err());
    }
}
