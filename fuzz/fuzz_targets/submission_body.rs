//! Any bytes as the body of `POST /v1/submissions`, read as the server reads it: JSON, then
//! the visit's schema. Never panics; a visit accepted keeps its bounds, and its content hash
//! is a pure function of the body (the same bytes, once more canonicalised, hash the same), so
//! a retry is always recognised as one.
#![no_main]

use huikan_shared::content_sha256;
use huikan_shared::limits;
use huikan_shared::submission::Submission;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(received) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(visit) = Submission::from_value(&received) else {
        return;
    };
    assert!(!visit.household_id.trim().is_empty());
    assert!(visit.photos.len() <= limits::PHOTOS);
    if let Some(device_id) = &visit.device_id {
        assert!(limits::check(device_id, limits::ID).is_ok());
    }
    if let Some(app_version) = &visit.app_version {
        assert!(limits::check(app_version, limits::NAME).is_ok());
    }
    let (hash, canonical) = content_sha256(&received);
    assert_eq!((hash.clone(), canonical.clone()), content_sha256(&received));
    // The stored canonical content, hashed again (as an auditor checking an export does),
    // gives the stored hash.
    let stored: Value = serde_json::from_str(&canonical).expect("canonical content is JSON");
    assert_eq!(
        content_sha256(&stored).0,
        hash,
        "the stored content hashes differently"
    );
});
