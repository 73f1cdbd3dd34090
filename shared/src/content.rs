//! The content hash of a visit: SHA-256 over the RFC 8785 (JCS) canonical JSON of the request as
//! received, without the fields that name the delivery rather than the visit.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Fields that identify a delivery of a visit, not its content: a retry after an app update or a
/// reinstall that resends under new ids must hash the same.
pub const DELIVERY_FIELDS: [&str; 3] = ["submission_id", "device_id", "app_version"];

/// The visit's content: the received JSON object without the delivery fields.
pub fn content_of(received: &Value) -> Value {
    let mut content = received.clone();
    if let Value::Object(map) = &mut content {
        for field in DELIVERY_FIELDS {
            map.remove(field);
        }
    }
    content
}

/// JCS canonical text of a JSON value.
pub fn canonical_json(value: &Value) -> String {
    // serde_jcs only fails for values JSON cannot hold (non-finite numbers), which a parsed
    // serde_json::Value never contains.
    serde_jcs::to_string(value).unwrap_or_default()
}

/// Lowercase hex SHA-256 of the canonical content, with the canonical text it was computed over.
pub fn content_sha256(received: &Value) -> (String, String) {
    let canonical = canonical_json(&content_of(received));
    let digest = Sha256::digest(canonical.as_bytes());
    (hex::encode(digest), canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delivery_fields_do_not_change_the_hash() {
        let a = json!({"submission_id": "a", "device_id": "x", "app_version": "1", "household_id": "h"});
        let b = json!({"submission_id": "b", "device_id": "y", "household_id": "h"});
        assert_eq!(content_sha256(&a).0, content_sha256(&b).0);
    }

    #[test]
    fn key_order_and_number_spelling_do_not_change_the_hash() {
        let a: Value = serde_json::from_str(r#"{"b": 10.0, "a": [1, "x"]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": [1, "x"], "b": 10}"#).unwrap();
        assert_eq!(content_sha256(&a), content_sha256(&b));
        assert_eq!(content_sha256(&a).1, r#"{"a":[1,"x"],"b":10}"#);
    }

    #[test]
    fn absent_and_null_differ() {
        let a = json!({"notes": null});
        let b = json!({});
        assert_ne!(content_sha256(&a).0, content_sha256(&b).0);
    }

    #[test]
    fn known_vector() {
        // sha256 of the two bytes "{}"
        assert_eq!(
            content_sha256(&json!({})).0,
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
