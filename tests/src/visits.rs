//! Visits as a phone would submit them.

use serde_json::{Value, json};
use uuid::Uuid;

/// A complete, valid visit to `household_id` with the given photos (sha256, kind).
pub fn visit(household_id: &str, photos: &[(&str, &str)]) -> Value {
    json!({
        "submission_id": Uuid::now_v7().to_string(),
        "household_id": household_id,
        "campaign": "2020-lookback-1",
        "form_version": "1",
        "surveyed_at": "2020-03-02T10:15:00+08:00",
        "location": {"lat": 34.51, "lon": 112.17, "accuracy_m": 12.0},
        "answers": {
            "members": [{
                "id_number": "41032719800101123X", "name": "张三", "relation": "head",
                "present": true, "school_status": "not_school_age", "insured": true,
                "health": "healthy", "disability_grade": null, "labour": "normal"
            }],
            "food_secure": true,
            "clothing_secure": true,
            "housing": {"grade": "B", "renovated": false},
            "water": {"source": "piped", "quantity_ok": true, "quality_ok": true,
                      "convenience_ok": true, "guarantee_ok": true},
            "income": {"per_capita_yuan": 5200, "sources": ["wage"]},
            "notes": Uuid::new_v4().to_string()
        },
        "photos": photos.iter().map(|(sha, kind)| json!({"sha256": sha, "kind": kind})).collect::<Vec<_>>(),
        "device_id": "test-device",
        "app_version": "1.0.0"
    })
}
