//! Evidence rules: are the visit's photos and positions those of a real visit to the registered
//! house, at the time it claims, in the campaign it names.

use chrono::{DateTime, FixedOffset, TimeZone};
use huikan_shared::geo;
use huikan_shared::submission::Datum;
use serde_json::json;

use super::rules::{Campaign, Finding, Registered, Thresholds, Verdict, Visit};

pub fn findings(
    visit: &Visit,
    registered: Option<&Registered>,
    campaign: Option<&Campaign>,
    thresholds: &Thresholds,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    match campaign {
        None => findings.push(Finding::new(
            "unknown_campaign",
            "warning",
            format!("campaign:{}", visit.campaign),
            format!("campaign {:?} is not defined", visit.campaign),
        )),
        Some(campaign) => {
            for kind in &campaign.required_photos {
                if !visit.photos.iter().any(|p| p.kind.as_str() == kind) {
                    findings.push(Finding::new(
                        "missing_required_photo",
                        "warning",
                        format!("kind:{kind}"),
                        format!("the campaign requires a {kind} photo and the visit has none"),
                    ));
                }
            }
        }
    }
    findings.extend(photo_times(visit, campaign, thresholds));
    let house = registered.filter(|r| !r.removed).and_then(|r| r.location);
    let mut fixes = vec![(
        "location:visit".to_owned(),
        "the visit's location",
        &visit.location,
    )];
    for photo in &visit.photos {
        if let Some(location) = &photo.location {
            fixes.push((
                format!("location:photo:{}", photo.sha256),
                "the location reported with photo",
                location,
            ));
        }
    }
    for (subject, what, fix) in fixes {
        if fix.accuracy_m == 0.0 || fix.mock == Some(true) {
            let why = if fix.mock == Some(true) {
                "is marked mock"
            } else {
                "has an accuracy of 0 m"
            };
            findings.push(Finding::new(
                "mock_location",
                "critical",
                subject.clone(),
                format!("{what}{} {why}: a faked position", photo_name(&subject)),
            ));
        }
        if let Some(house) = house {
            let at = geo::to_wgs84(fix.lat, fix.lon, fix.datum.unwrap_or(Datum::Wgs84));
            findings.extend(far(house, at, fix.accuracy_m, subject, what, thresholds));
        }
    }
    if let Some(house) = house {
        for photo in &visit.photos {
            if let Some(gps) = photo.exif.as_ref().and_then(|e| e.gps) {
                let subject = format!("location:exif:{}", photo.sha256);
                findings.extend(far(
                    house,
                    gps,
                    0.0,
                    subject,
                    "the EXIF GPS of photo",
                    thresholds,
                ));
            }
        }
    }
    findings
}

fn photo_name(subject: &str) -> String {
    subject
        .rsplit_once(':')
        .filter(|(head, _)| head.ends_with("photo") || head.ends_with("exif"))
        .map(|(_, sha)| format!(" {sha}"))
        .unwrap_or_default()
}

/// `location_far_from_household` when a position is farther from the house than the limit plus
/// its accuracy (exactly at the limit is near).
fn far(
    house: (f64, f64),
    at: (f64, f64),
    accuracy_m: f64,
    subject: String,
    what: &str,
    thresholds: &Thresholds,
) -> Option<Finding> {
    let distance = geo::distance_m(house, at);
    let limit = thresholds.far_metres + accuracy_m;
    (distance > limit).then(|| {
        let detail = format!(
            "{what}{} is {distance:.0} m from the registered house, more than {limit:.0} m ({} m plus its accuracy of {accuracy_m} m)",
            photo_name(&subject),
            thresholds.far_metres
        );
        Finding::new("location_far_from_household", "warning", subject, detail)
            .with_data(json!({"distance_m": distance.round(), "limit_m": limit}))
    })
}

/// `photo_time_implausible`: the camera's own time, against the visit's and the campaign's.
fn photo_times(
    visit: &Visit,
    campaign: Option<&Campaign>,
    thresholds: &Thresholds,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for photo in &visit.photos {
        let Some(exif) = &photo.exif else { continue };
        let Some(local) = exif.taken_at else { continue };
        // Without an offset the camera's clock is read in the campaign's time zone (else the
        // visit's own offset).
        let taken: Option<DateTime<FixedOffset>> = match (exif.offset, campaign) {
            (Some(offset), _) => offset.from_local_datetime(&local).earliest(),
            (None, Some(c)) => c
                .timezone
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.fixed_offset()),
            (None, None) => visit
                .surveyed_at
                .offset()
                .from_local_datetime(&local)
                .earliest(),
        };
        let Some(taken) = taken else { continue };
        let apart_hours = (taken - visit.surveyed_at).num_seconds().abs() as f64 / 3600.0;
        let subject = format!("photo:{}", photo.sha256);
        let why = if apart_hours > thresholds.photo_time_hours {
            Some(format!(
                "was taken at {} by its EXIF, {apart_hours:.1} h from the visit at {}: more than {} h",
                taken.to_rfc3339(),
                visit.surveyed_at.to_rfc3339(),
                thresholds.photo_time_hours
            ))
        } else {
            campaign.filter(|c| taken < c.starts_at).map(|c| {
                format!(
                    "was taken at {} by its EXIF, before the campaign started at {}",
                    taken.to_rfc3339(),
                    c.starts_at.to_rfc3339()
                )
            })
        };
        if let Some(why) = why {
            findings.push(
                Finding::new(
                    "photo_time_implausible",
                    "warning",
                    subject,
                    format!("photo {} {why}", photo.sha256),
                )
                .with_data(json!({"taken_at": taken.to_rfc3339()})),
            );
        }
    }
    findings
}

/// `conflicting_resurvey`: an earlier visit in the round, still standing, that disagrees with
/// this one on a guarantee. A visit answering a resurvey request is expected to differ.
pub fn conflicting_resurvey(
    visit: &Visit,
    verdict: &Verdict,
    earlier: &[(&Visit, Verdict)],
) -> Vec<Finding> {
    if visit.review_state == "rejected" {
        return Vec::new();
    }
    earlier
        .iter()
        .filter(|(other, _)| {
            !matches!(
                other.review_state.as_str(),
                "rejected" | "resurvey_requested"
            ) && visit.duplicate_of != Some(other.submission_id)
        })
        .filter_map(|(other, other_verdict)| {
            let differ = verdict.differences(other_verdict);
            (!differ.is_empty()).then(|| {
                Finding::new(
                    "conflicting_resurvey",
                    "warning",
                    format!("submission:{}", other.submission_id),
                    format!(
                        "visit {} of the same household in this campaign disagrees on {}",
                        other.submission_id,
                        differ.join(", ")
                    ),
                )
                .with_data(
                    json!({"other_submission_id": other.submission_id, "guarantees": differ}),
                )
            })
        })
        .collect()
}
