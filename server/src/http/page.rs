//! Cursor pagination as the contract defines it: `?since=<cursor>&limit=<n>`, opaque cursors,
//! `limit` defaulting to 100 and clamped to 1000.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use huikan_shared::limits;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Deserialize, Default)]
pub struct PageQuery {
    pub since: Option<String>,
    pub limit: Option<String>,
}

pub struct Page {
    /// The feed position after which to read; 0 for the beginning.
    pub after: i64,
    pub limit: i64,
}

impl PageQuery {
    /// Parses the query for a feed named `feed`; a cursor of another feed is not ours.
    pub fn parse(&self, feed: &str) -> Result<Page, AppError> {
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => n.min(MAX_LIMIT),
                _ => {
                    return Err(AppError::invalid_query(format!(
                        "limit must be a positive integer, got {s:?}"
                    )));
                }
            },
        };
        let after = match self.since.as_deref() {
            None | Some("") => 0,
            Some(cursor) => decode(feed, cursor).ok_or_else(|| {
                AppError::invalid_query(format!(
                    "since: {cursor:?} is not a cursor this server issued"
                ))
            })?,
        };
        Ok(Page { after, limit })
    }

    /// Parses the query for a listing ordered by a text key (`after` is "" at the start).
    pub fn parse_keyed(&self, listing: &str) -> Result<(String, i64), AppError> {
        let numbered = PageQuery {
            since: None,
            limit: self.limit.clone(),
        };
        let limit = numbered.parse(listing)?.limit;
        let after = match self.since.as_deref() {
            None | Some("") => String::new(),
            Some(cursor) => decode_key(listing, cursor).ok_or_else(|| {
                AppError::invalid_query(format!(
                    "since: {cursor:?} is not a cursor this server issued"
                ))
            })?,
        };
        Ok((after, limit))
    }
}

pub fn encode(feed: &str, position: impl std::fmt::Display) -> String {
    URL_SAFE_NO_PAD.encode(format!("{feed}:{position}"))
}

fn decode_key(feed: &str, cursor: &str) -> Option<String> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (name, key) = text.split_once(':')?;
    (name == feed).then(|| key.to_owned())
}

fn decode(feed: &str, cursor: &str) -> Option<i64> {
    let position: i64 = decode_key(feed, cursor)?.parse().ok()?;
    (position >= 0).then_some(position)
}

#[derive(Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_cursor: String,
    pub has_more: bool,
}

impl<T> Paged<T> {
    /// Builds a page from up to `limit + 1` rows read after `page.after`, each with its position.
    pub fn from_rows(feed: &str, page: &Page, mut rows: Vec<(i64, T)>) -> Self {
        let has_more = rows.len() as i64 > page.limit;
        rows.truncate(page.limit as usize);
        let last = rows.last().map(|(p, _)| *p).unwrap_or(page.after);
        Paged {
            items: rows.into_iter().map(|(_, item)| item).collect(),
            next_cursor: encode(feed, last),
            has_more,
        }
    }
}

impl<T> Paged<T> {
    /// Builds a page of a listing ordered by a text key from up to `limit + 1` rows read after
    /// the key `after`, each with its key.
    pub fn from_keyed_rows(
        listing: &str,
        after: &str,
        limit: i64,
        mut rows: Vec<(String, T)>,
    ) -> Self {
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let last = rows
            .last()
            .map_or(after, |(key, _)| key.as_str())
            .to_owned();
        Paged {
            items: rows.into_iter().map(|(_, item)| item).collect(),
            next_cursor: encode(listing, last),
            has_more,
        }
    }
}

/// A query-string extractor whose rejection is our problem+json (400 `invalid_query`), not
/// axum's plain text: a repeated or malformed parameter, or one longer than
/// [`limits::QUERY_VALUE`] characters, gets a clear error naming it.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or_default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if let Err(e) = limits::check(&value, limits::QUERY_VALUE) {
                return Err(AppError::invalid_query(format!(
                    "{}: {e}",
                    limits::quoted(&name)
                )));
            }
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| AppError::invalid_query(super::json::describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(since: Option<&str>, limit: Option<&str>) -> PageQuery {
        PageQuery {
            since: since.map(str::to_owned),
            limit: limit.map(str::to_owned),
        }
    }

    #[test]
    fn limits_default_clamp_and_reject() {
        assert_eq!(q(None, None).parse("f").unwrap().limit, 100);
        assert_eq!(q(None, Some("5000")).parse("f").unwrap().limit, 1000);
        for bad in ["0", "-1", "abc", "1.5", "+3", ""] {
            assert!(q(None, Some(bad)).parse("f").is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = encode("f", 42);
        assert_eq!(q(Some(&c), None).parse("f").unwrap().after, 42);
        assert!(q(Some(&c), None).parse("g").is_err());
        assert!(q(Some("garbage!"), None).parse("f").is_err());
    }
}
