//! Visits as a phone would submit them.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::registry::Household;

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

/// A sound visit to a registered household (see `registry::village`): its registered members,
/// every guarantee holding, at the registered house.
pub fn sound_visit(household: &Household, photos: &[(&str, &str)]) -> Value {
    let mut body = visit(&household.id, photos);
    body["answers"]["members"] = household
        .members
        .iter()
        .map(|m| {
            let relation = match m.relation {
                "户主" => "head",
                "配偶" => "spouse",
                _ => "child",
            };
            json!({"id_number": m.id_number, "name": m.name, "relation": relation, "present": true,
                   "school_status": "not_school_age", "insured": true, "health": "healthy",
                   "disability_grade": null, "labour": "normal"})
        })
        .collect();
    body["location"] = json!({"lat": 34.51, "lon": 112.17, "accuracy_m": 12.0});
    body
}
