//! Audit exports: the bundle a team takes away, checked offline by `huikan verify-bundle`, and
//! tampered with in every way the issue names.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use huikan_tests::api::expect_problem;
use huikan_tests::photos::{sha256_hex, small_jpeg};
use huikan_tests::server::binary;
use huikan_tests::{TestServer, backend_tests};
use serde_json::{Value, json};

use super::audit::activity;

backend_tests!(
    a_village_export_verifies_offline,
    a_household_export_masks_id_numbers_unless_asked,
    a_tampered_record_is_named,
    a_replaced_photo_is_named,
    an_edited_manifest_is_named,
    a_bundle_signed_by_another_key_is_refused_when_the_key_is_pinned,
    bad_export_requests_get_clear_errors,
);

/// Exports `request` as an auditor and keeps the bundle in the server's data dir.
async fn export(server: &TestServer, request: Value, query: &str) -> PathBuf {
    let auditor = server.user("auditor", &[]).await;
    let response = auditor
        .post_json(&format!("/v1/audit/exports{query}"), &request)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    let bytes = response.bytes().await.unwrap();
    let path = server
        .data_dir()
        .join(format!("export-{}.zip", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, &bytes).unwrap();
    path
}

/// `huikan verify-bundle` on `bundle`: (succeeded, what it printed).
pub(super) fn verify_bundle(bundle: &Path, extra: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(binary())
        .arg("verify-bundle")
        .arg(bundle)
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn members(bundle: &Path) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(bundle).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut member = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            member.read_to_end(&mut bytes).unwrap();
            (member.name().unwrap().into_owned(), bytes)
        })
        .collect()
}

/// Writes the bundle again with `change` applied to its members, as a forger would.
fn rewrite(bundle: &Path, change: impl Fn(&str, &mut Vec<u8>)) -> PathBuf {
    let out = bundle.with_extension("tampered.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&out).unwrap());
    for (name, mut bytes) in members(bundle) {
        change(&name, &mut bytes);
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap();
    out
}

fn member(bundle: &Path, name: &str) -> Value {
    let (_, bytes) = members(bundle)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is not in the bundle"));
    serde_json::from_slice(&bytes).unwrap()
}

fn first_visit(bundle: &Path) -> String {
    members(bundle)
        .into_iter()
        .map(|(name, _)| name)
        .find(|n| n.starts_with("visits/"))
        .expect("a visit in the bundle")
}

async fn a_village_export_verifies_offline(server: TestServer) {
    activity(&server).await;
    let bundle = export(&server, json!({"prefix": "410327101001"}), "").await;
    let names: Vec<String> = members(&bundle).into_iter().map(|(n, _)| n).collect();
    for expected in [
        "households/4103271010010001.json",
        "households/4103271010010003.json",
        "audit/chain.jsonl",
        "manifest.json",
        "checkpoint.json",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert_eq!(names.iter().filter(|n| n.starts_with("visits/")).count(), 3);
    assert_eq!(names.iter().filter(|n| n.starts_with("photos/")).count(), 1);
    let manifest = member(&bundle, "manifest.json");
    assert_eq!(
        manifest["files"].as_array().unwrap().len(),
        names.len() - 2,
        "every member but the manifest and the checkpoint is listed: {manifest}"
    );
    let checkpoint = member(&bundle, "checkpoint.json");
    assert_eq!(checkpoint["scope"], "prefix:410327101001");

    let (ok, printed) = verify_bundle(&bundle, &[]);
    assert!(ok, "{printed}");
    assert!(printed.contains("3 visits, 1 photos"), "{printed}");
    assert!(printed.contains("end at the signed head"), "{printed}");

    // The export is itself on the record, and the server's chain still verifies.
    let exported = server
        .audit_log()
        .await
        .into_iter()
        .find(|e| e["action"] == "audit.exported")
        .expect("an audit.exported entry");
    assert_eq!(exported["data"]["scope"], "prefix:410327101001");
    let auditor = server.user("auditor", &[]).await;
    let verified: Value = auditor.get("/v1/audit/verify").await.json().await.unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
}

async fn a_household_export_masks_id_numbers_unless_asked(server: TestServer) {
    activity(&server).await;
    let masked = export(&server, json!({"household_id": "4103271010010002"}), "").await;
    let household = member(&masked, "households/4103271010010002.json");
    let id = household["record"]["members"][0]["id_number"]
        .as_str()
        .unwrap();
    assert!(id.contains('*'), "masked: {id}");
    let (ok, printed) = verify_bundle(&masked, &[]);
    assert!(ok, "{printed}");
    assert!(printed.contains("1 visits"), "{printed}");
    assert!(printed.contains("re-hashed for 0"), "{printed}");

    let unmasked = export(
        &server,
        json!({"household_id": "4103271010010002"}),
        "?unmask=true",
    )
    .await;
    let household = member(&unmasked, "households/4103271010010002.json");
    let id = household["record"]["members"][0]["id_number"]
        .as_str()
        .unwrap();
    assert!(!id.contains('*'), "whole: {id}");
    let (ok, printed) = verify_bundle(&unmasked, &[]);
    assert!(ok, "{printed}");
    assert!(printed.contains("content re-hashed for 1"), "{printed}");
    assert!(printed.contains("record re-hashed for 1"), "{printed}");

    // Both exports, and the read of whole ID numbers, are in the household's trail.
    let auditor = server.user("auditor", &[]).await;
    let trail: Value = auditor
        .get_json("/v1/audit/households/4103271010010002/trail")
        .await;
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        // Photo processing and its findings (the activity reuses one photo) run in the background.
        .filter(|a| !a.starts_with("photo.") && !a.starts_with("finding."))
        .collect();
    assert_eq!(
        actions,
        [
            "household.registered",
            "submission.received",
            "audit.exported",
            "audit.exported",
            "id_numbers.read"
        ],
        "{trail}"
    );
    let unmasked_export = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["action"] == "audit.exported")
        .unwrap();
    assert_eq!(unmasked_export["data"]["unmasked"], true);
}

async fn a_tampered_record_is_named(server: TestServer) {
    activity(&server).await;
    let bundle = export(&server, json!({"prefix": "410327101"}), "").await;
    let visit = first_visit(&bundle);
    let tampered = rewrite(&bundle, |name, bytes| {
        if name == visit {
            // One byte of the record: the first digit of its sequence number.
            let at = bytes.iter().position(|b| b.is_ascii_digit()).unwrap();
            bytes[at] = if bytes[at] == b'9' {
                b'8'
            } else {
                bytes[at] + 1
            };
        }
    });
    let (ok, printed) = verify_bundle(&tampered, &[]);
    assert!(!ok, "{printed}");
    assert!(
        printed.contains(&format!("MISMATCH: {visit}: SHA-256")),
        "{printed}"
    );
    assert!(printed.contains("the file was altered"), "{printed}");
}

async fn a_replaced_photo_is_named(server: TestServer) {
    activity(&server).await;
    let bundle = export(&server, json!({"prefix": "410327101001"}), "").await;
    let photo = members(&bundle)
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| n.starts_with("photos/"))
        .unwrap();
    let other = small_jpeg(10);
    let tampered = rewrite(&bundle, |name, bytes| {
        if name == photo {
            *bytes = other.clone();
        }
    });
    let (ok, printed) = verify_bundle(&tampered, &[]);
    assert!(!ok, "{printed}");
    assert!(
        printed.contains(&format!(
            "MISMATCH: {photo}: its bytes hash to {}",
            sha256_hex(&other)
        )),
        "{printed}"
    );
}

async fn an_edited_manifest_is_named(server: TestServer) {
    activity(&server).await;
    let bundle = export(&server, json!({"prefix": "410327101001"}), "").await;
    let visit = first_visit(&bundle);
    // A forger changes a record and fixes its line in the manifest to match.
    let tampered = rewrite(&bundle, |name, bytes| {
        if name == visit {
            let text = String::from_utf8(bytes.clone()).unwrap();
            *bytes = text
                .replacen("\"received\"", "\"approved\"", 1)
                .into_bytes();
        }
    });
    let forged_sha = {
        let (_, bytes) = members(&tampered)
            .into_iter()
            .find(|(n, _)| *n == visit)
            .unwrap();
        (sha256_hex(&bytes), bytes.len())
    };
    let tampered = rewrite(&tampered, |name, bytes| {
        if name == "manifest.json" {
            let mut manifest: Value = serde_json::from_slice(bytes).unwrap();
            for file in manifest["files"].as_array_mut().unwrap() {
                if file["path"] == visit.as_str() {
                    file["sha256"] = json!(forged_sha.0);
                    file["size"] = json!(forged_sha.1);
                }
            }
            *bytes = serde_json::to_vec_pretty(&manifest).unwrap();
        }
    });
    let (ok, printed) = verify_bundle(&tampered, &[]);
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("MISMATCH: manifest.json: its SHA-256"),
        "{printed}"
    );
    assert!(printed.contains("the manifest was edited"), "{printed}");
}

async fn a_bundle_signed_by_another_key_is_refused_when_the_key_is_pinned(server: TestServer) {
    activity(&server).await;
    let bundle = export(&server, json!({"prefix": "410327101001"}), "").await;
    let key = member(&bundle, "checkpoint.json")["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, printed) = verify_bundle(&bundle, &["--public-key", &key]);
    assert!(ok, "{printed}");
    let other = "ab".repeat(32);
    let (ok, printed) = verify_bundle(&bundle, &["--public-key", &other]);
    assert!(!ok, "{printed}");
    assert!(
        printed.contains(&format!("not by the pinned key {other}")),
        "{printed}"
    );
    // A cut-off download is not a bundle.
    let bytes = std::fs::read(&bundle).unwrap();
    let cut = bundle.with_extension("cut.zip");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, printed) = verify_bundle(&cut, &[]);
    assert!(!ok, "{printed}");
    assert!(printed.contains("not a whole ZIP archive"), "{printed}");
}

async fn bad_export_requests_get_clear_errors(server: TestServer) {
    activity(&server).await;
    let auditor = server.user("auditor", &[]).await;
    for (body, code) in [
        (
            json!({"prefix": "410327101", "household_id": "4103271010010001"}),
            "invalid_body",
        ),
        (json!({}), "invalid_body"),
        (json!({"prefix": "41x"}), "invalid_body"),
        (json!({"household_id": ""}), "invalid_body"),
        (json!({"village": "410327101"}), "invalid_body"),
    ] {
        expect_problem(
            auditor.post_json("/v1/audit/exports", &body).await,
            400,
            code,
        )
        .await;
    }
    expect_problem(
        auditor
            .post_json("/v1/audit/exports", &json!({"household_id": "9999"}))
            .await,
        404,
        "not_found",
    )
    .await;
    expect_problem(
        auditor
            .post_json(
                "/v1/audit/exports?unmask=maybe",
                &json!({"prefix": "410327101"}),
            )
            .await,
        400,
        "invalid_query",
    )
    .await;
    for role in ["reviewer", "field_staff"] {
        let user = server.user(role, &["410327101"]).await;
        expect_problem(
            user.post_json("/v1/audit/exports", &json!({"prefix": "410327101"}))
                .await,
            403,
            "forbidden",
        )
        .await;
    }
}
