//! A county set up through the API as an administrator would: its registry imported and its
//! survey rounds defined.

use serde_json::{Value, json};

use crate::Api;
use crate::registry::{Household, rows, utf8_bom};

/// Imports `households` as a UTF-8 CSV; the import must be accepted. Gives its report.
pub async fn import_registry(admin: &Api, households: &[Household]) -> Value {
    let imported = admin
        .post_raw(
            "/v1/registry/imports",
            "text/csv",
            utf8_bom(&rows(households)),
        )
        .await;
    assert_eq!(imported.status(), 201);
    imported.json().await.expect("import report")
}

/// Defines (or redefines) the round `id`, running from `starts` (a date, Beijing time) to the
/// end of 2020 and asking for `required_photos`.
pub async fn define_campaign(admin: &Api, id: &str, starts: &str, required_photos: &[&str]) {
    let defined = admin
        .put_json(
            &format!("/v1/campaigns/{id}"),
            &json!({"name": id, "starts_at": format!("{starts}T00:00:00+08:00"),
                    "ends_at": "2020-12-31T23:59:59+08:00", "timezone": "Asia/Shanghai",
                    "required_photos": required_photos}),
        )
        .await;
    assert!(defined.status().is_success(), "defining {id}");
}
