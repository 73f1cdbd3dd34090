//! The bounds on every string and list that arrives from outside. openapi.yaml states the same
//! numbers (`maxLength`, `maxItems`); a value over its bound is refused naming the field, so
//! nothing unbounded is ever stored or echoed back.
//!
//! Lengths count characters (Unicode scalar values), as JSON Schema's `maxLength` does.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// Ids chosen by a client: device ids, instance ids, idempotency keys.
pub const ID: usize = 128;
/// Short labels: usernames, versions, names of people and campaigns, time zones.
pub const NAME: usize = 128;
/// Passwords (argon2 hashes any length; this keeps a login from hashing megabytes).
pub const PASSWORD: usize = 256;
/// A 身份证号 as written (18 characters; older and foreign documents differ, so with room).
pub const ID_NUMBER: usize = 32;
/// Free text a person writes: visit notes, review reasons and comments.
pub const TEXT: usize = 4000;
/// A query-string value or an opaque cursor.
pub const QUERY_VALUE: usize = 256;
/// A registry cell: names, places and codes are all far shorter; a longer cell is a broken or
/// hostile file, and its row is skipped naming the column.
pub const REGISTRY_CELL: usize = 128;
/// Household members in one visit.
pub const MEMBERS: usize = 50;
/// Photos named by one visit.
pub const PHOTOS: usize = 50;
/// Entries of a small enumerated list (income sources, required photo kinds).
pub const ENUM_LIST: usize = 20;
/// Division prefixes in one user's scope.
pub const SCOPE: usize = 200;

/// The detail for a string over its bound.
pub fn too_long(max: usize, got: usize) -> String {
    format!("at most {max} characters (got {got})")
}

/// Checks a string against its bound.
pub fn check(value: &str, max: usize) -> Result<(), String> {
    // Count lazily: a multi-megabyte value stops being counted just past the bound.
    match value.chars().nth(max) {
        None => Ok(()),
        Some(_) => Err(too_long(max, value.chars().count())),
    }
}

/// A value shown inside an error detail: quoted, and cut short so a hostile value is never
/// echoed back whole.
pub fn quoted(value: &str) -> String {
    const SHOWN: usize = 40;
    match value.char_indices().nth(SHOWN) {
        None => format!("{value:?}"),
        Some((end, _)) => format!(
            "{:?}… ({} characters)",
            &value[..end],
            value.chars().count()
        ),
    }
}

/// `deserialize_with` for a `String` of at most `MAX` characters.
pub fn text<'de, const MAX: usize, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check(&s, MAX).map_err(de::Error::custom)?;
    Ok(s)
}

/// `deserialize_with` for an optional `String` of at most `MAX` characters.
pub fn opt_text<'de, const MAX: usize, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    if let Some(s) = &s {
        check(s, MAX).map_err(de::Error::custom)?;
    }
    Ok(s)
}

/// `deserialize_with` (with `default`) for an optional `String` that, when given, is a string of
/// at most `MAX` characters: an explicit `null` is refused like any other wrong type.
pub fn present_text<'de, const MAX: usize, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    text::<MAX, D>(d).map(Some)
}

/// `deserialize_with` for a list of at most `MAX` entries; refused at the entry past the bound,
/// without reading the rest.
pub fn list<'de, const MAX: usize, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    struct Bounded<const MAX: usize, T>(PhantomData<T>);

    impl<'de, const MAX: usize, T: Deserialize<'de>> Visitor<'de> for Bounded<MAX, T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {MAX} entries")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX));
            while let Some(item) = seq.next_element()? {
                if items.len() == MAX {
                    return Err(de::Error::custom(format!("at most {MAX} entries")));
                }
                items.push(item);
            }
            Ok(items)
        }
    }

    d.deserialize_seq(Bounded::<MAX, T>(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Sample {
        #[serde(deserialize_with = "text::<4, _>")]
        name: String,
        #[serde(default, deserialize_with = "opt_text::<4, _>")]
        note: Option<String>,
        #[serde(deserialize_with = "list::<2, _, _>")]
        tags: Vec<u8>,
    }

    fn parse(v: serde_json::Value) -> Result<Sample, String> {
        serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn bounds_count_characters_and_name_the_field() {
        use serde_json::json;
        let ok = parse(json!({"name": "四个汉字", "tags": [1, 2]})).unwrap();
        assert_eq!(
            (ok.name.as_str(), ok.note, ok.tags),
            ("四个汉字", None, vec![1, 2])
        );
        let e = parse(json!({"name": "五个汉字啊", "tags": []})).unwrap_err();
        assert_eq!(e, "name: at most 4 characters (got 5)");
        let e = parse(json!({"name": "a", "note": "12345", "tags": []})).unwrap_err();
        assert!(e.starts_with("note: at most 4"), "{e}");
        let e = parse(json!({"name": "a", "tags": [1, 2, 3]})).unwrap_err();
        assert!(e.starts_with("tags: at most 2 entries"), "{e}");
        let e = parse(json!({"name": "a", "tags": [1, "x"]})).unwrap_err();
        assert!(e.starts_with("tags[1]:"), "{e}");
        assert!(parse(json!({"name": "a", "note": null, "tags": []})).is_ok());
    }

    #[test]
    fn quoted_values_are_cut_short() {
        assert_eq!(quoted("ab"), "\"ab\"");
        let long = "x".repeat(5_000_000);
        let shown = quoted(&long);
        assert!(
            shown.len() < 80 && shown.ends_with("(5000000 characters)"),
            "{shown}"
        );
    }
}
