//! Deserialisation helpers for request bodies.

use serde::{Deserialize, Deserializer};

/// For `#[serde(default, deserialize_with = "present")]` on an optional field: absent is `None`,
/// and an explicit `null` is refused as any other value of the wrong type is, so a body that
/// does not fit its schema is a 400, not read as if the field were absent.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Body {
        #[serde(default, deserialize_with = "super::present")]
        name: Option<String>,
    }

    #[test]
    fn absent_is_none_and_null_is_refused() {
        let absent: Body = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.name, None);
        let given: Body = serde_json::from_str(r#"{"name":"a"}"#).unwrap();
        assert_eq!(given.name.as_deref(), Some("a"));
        assert!(serde_json::from_str::<Body>(r#"{"name":null}"#).is_err());
    }
}
