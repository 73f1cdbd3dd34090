//! The visit a phone submits, typed for validation. The server hashes and stores the JSON as it
//! was received; these types only decide whether it fits the contract and name the field that
//! does not.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::ids::{CampaignId, Sha256Hex, parse_canonical_uuid};
use crate::limits;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    #[serde(deserialize_with = "canonical_uuid")]
    pub submission_id: uuid::Uuid,
    #[serde(deserialize_with = "household_id")]
    pub household_id: String,
    pub campaign: CampaignId,
    #[serde(deserialize_with = "form_version")]
    pub form_version: String,
    pub surveyed_at: DateTime<FixedOffset>,
    pub location: Location,
    pub answers: Answers,
    #[serde(deserialize_with = "limits::list::<{ limits::PHOTOS }, _, _>")]
    pub photos: Vec<Photo>,
    #[serde(default, deserialize_with = "limits::opt_text::<{ limits::ID }, _>")]
    pub device_id: Option<String>,
    #[serde(default, deserialize_with = "limits::opt_text::<{ limits::NAME }, _>")]
    pub app_version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    #[serde(deserialize_with = "latitude")]
    pub lat: f64,
    #[serde(deserialize_with = "longitude")]
    pub lon: f64,
    #[serde(deserialize_with = "non_negative")]
    pub accuracy_m: f64,
    #[serde(default)]
    pub mock: Option<bool>,
    #[serde(default)]
    pub datum: Option<Datum>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Datum {
    Wgs84,
    Gcj02,
    Bd09,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Photo {
    pub sha256: Sha256Hex,
    pub kind: PhotoKind,
    #[serde(default)]
    pub taken_at: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub location: Option<Location>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoKind {
    HousingExterior,
    HousingInterior,
    WaterSource,
    WaterStorage,
    Document,
    Other,
}

impl PhotoKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PhotoKind::HousingExterior => "housing_exterior",
            PhotoKind::HousingInterior => "housing_interior",
            PhotoKind::WaterSource => "water_source",
            PhotoKind::WaterStorage => "water_storage",
            PhotoKind::Document => "document",
            PhotoKind::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    #[serde(deserialize_with = "limits::list::<{ limits::MEMBERS }, _, _>")]
    pub members: Vec<Member>,
    pub food_secure: bool,
    pub clothing_secure: bool,
    pub housing: Housing,
    pub water: Water,
    pub income: Income,
    #[serde(default, deserialize_with = "limits::opt_text::<{ limits::TEXT }, _>")]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    #[serde(deserialize_with = "limits::text::<{ limits::ID_NUMBER }, _>")]
    pub id_number: String,
    #[serde(default, deserialize_with = "limits::opt_text::<{ limits::NAME }, _>")]
    pub name: Option<String>,
    pub relation: Relation,
    pub present: bool,
    pub school_status: SchoolStatus,
    pub insured: bool,
    pub health: Health,
    /// Required, but may be null.
    #[serde(deserialize_with = "disability_grade")]
    pub disability_grade: Option<u8>,
    pub labour: Labour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    Head,
    Spouse,
    Child,
    Grandchild,
    Parent,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchoolStatus {
    NotSchoolAge,
    Preschool,
    Enrolled,
    HomeTaught,
    DroppedOut,
    Graduated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Chronic,
    SeriousIllness,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Labour {
    Normal,
    Skilled,
    Weak,
    Lost,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Housing {
    pub grade: HousingGrade,
    pub renovated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HousingGrade {
    A,
    B,
    C,
    D,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Water {
    pub source: WaterSource,
    pub quantity_ok: bool,
    pub quality_ok: bool,
    pub convenience_ok: bool,
    pub guarantee_ok: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaterSource {
    Piped,
    Well,
    Spring,
    Cistern,
    Trucked,
    Other,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Income {
    #[serde(deserialize_with = "non_negative")]
    pub per_capita_yuan: f64,
    #[serde(deserialize_with = "limits::list::<{ limits::ENUM_LIST }, _, _>")]
    pub sources: Vec<IncomeSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncomeSource {
    Industry,
    Wage,
    PublicWelfareJob,
    Dibao,
    Tekun,
    DisabilityAllowance,
    ElderlyAllowance,
    Pension,
    FamilyPlanningAllowance,
    Other,
}

/// Masks a 身份证号 for roles that may not see it whole: the region and the last four
/// characters stay, the birth date goes (`410327********123X`).
pub fn mask_id_number(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 10 {
        return "*".repeat(chars.len());
    }
    let (head, rest) = chars.split_at(6);
    let tail = &rest[rest.len() - 4..];
    format!(
        "{}{}{}",
        head.iter().collect::<String>(),
        "*".repeat(rest.len() - 4),
        tail.iter().collect::<String>()
    )
}

impl Submission {
    /// Parses a received JSON value, or says which field does not fit and why.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })
    }
}

fn canonical_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<uuid::Uuid, D::Error> {
    let s = String::deserialize(d)?;
    parse_canonical_uuid(&s).map_err(serde::de::Error::custom)
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    Ok(s)
}

fn form_version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = non_empty(d)?;
    limits::check(&s, limits::NAME).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn household_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = non_empty(d)?;
    check_household_id(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

/// Whether `s` can be a household id (the registry's 户编号) at all.
pub fn check_household_id(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 64 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("a household id is 1 to 64 characters without spaces");
    }
    Ok(())
}

fn ranged<'de, D: Deserializer<'de>>(d: D, lo: f64, hi: f64, what: &str) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(lo..=hi).contains(&v) {
        return Err(serde::de::Error::custom(format!("{v} is not {what}")));
    }
    Ok(v)
}

fn latitude<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    ranged(d, -90.0, 90.0, "a latitude (-90 to 90)")
}

fn longitude<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    ranged(d, -180.0, 180.0, "a longitude (-180 to 180)")
}

fn non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    ranged(d, 0.0, f64::MAX, "zero or more")
}

fn disability_grade<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    match Option::<u8>::deserialize(d)? {
        Some(g) if !(1..=4).contains(&g) => Err(serde::de::Error::custom(format!(
            "{g} is not a disability grade (1 to 4, or null)"
        ))),
        g => Ok(g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn sample() -> Value {
        json!({
            "submission_id": "0190c3e2-7d3a-7b4c-9d1e-0123456789ab",
            "household_id": "4103271010010001",
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
                "food_secure": true, "clothing_secure": true,
                "housing": {"grade": "B", "renovated": false},
                "water": {"source": "piped", "quantity_ok": true, "quality_ok": true,
                          "convenience_ok": true, "guarantee_ok": true},
                "income": {"per_capita_yuan": 5200, "sources": ["wage"]}
            },
            "photos": [{"sha256": "a".repeat(64), "kind": "housing_exterior"}],
            "device_id": "d1", "app_version": "1.0"
        })
    }

    #[test]
    fn the_contract_example_parses() {
        let s = Submission::from_value(&sample()).unwrap();
        assert_eq!(s.photos[0].kind, PhotoKind::HousingExterior);
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = sample();
        v["answers"]["housing"]["grade"] = json!("E");
        let e = Submission::from_value(&v).unwrap_err();
        assert!(e.starts_with("answers.housing.grade:"), "{e}");

        let mut v = sample();
        v["answers"]["members"][0]
            .as_object_mut()
            .unwrap()
            .remove("disability_grade");
        let e = Submission::from_value(&v).unwrap_err();
        assert!(e.contains("disability_grade"), "{e}");

        let mut v = sample();
        v["extra"] = json!(1);
        let e = Submission::from_value(&v).unwrap_err();
        assert!(e.contains("extra"), "{e}");

        let mut v = sample();
        v["location"]["lat"] = json!("34.5");
        let e = Submission::from_value(&v).unwrap_err();
        assert!(e.starts_with("location.lat:"), "{e}");
    }

    /// Sets one field of a visit to a value.
    type SetField = fn(&mut Value, &str);

    #[test]
    fn every_string_and_list_is_bounded() {
        let long = "x".repeat(5 * 1024 * 1024);
        let cases: [(&str, SetField); 6] = [
            ("device_id", |v, s| v["device_id"] = json!(s)),
            ("form_version", |v, s| v["form_version"] = json!(s)),
            ("app_version", |v, s| v["app_version"] = json!(s)),
            ("answers.notes", |v, s| v["answers"]["notes"] = json!(s)),
            ("answers.members[0].name", |v, s| {
                v["answers"]["members"][0]["name"] = json!(s)
            }),
            ("answers.members[0].id_number", |v, s| {
                v["answers"]["members"][0]["id_number"] = json!(s)
            }),
        ];
        for (field, set) in cases {
            let mut v = sample();
            set(&mut v, &long);
            let e = Submission::from_value(&v).unwrap_err();
            assert!(e.starts_with(&format!("{field}: at most ")), "{field}: {e}");
            assert!(e.len() < 200, "the detail echoes the value: {}", e.len());
        }
        let mut v = sample();
        let member = v["answers"]["members"][0].clone();
        v["answers"]["members"] = json!(vec![member; limits::MEMBERS + 1]);
        let e = Submission::from_value(&v).unwrap_err();
        assert!(e.starts_with("answers.members: at most 50 entries"), "{e}");
        let mut v = sample();
        v["photos"][0]["sha256"] = json!(long);
        let e = Submission::from_value(&v).unwrap_err();
        assert!(e.starts_with("photos[0].sha256:") && e.len() < 200, "{e}");
    }

    #[test]
    fn id_numbers_mask_like_the_contract() {
        assert_eq!(mask_id_number("41032719800101123X"), "410327********123X");
        assert_eq!(mask_id_number("123"), "***");
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let mut v = sample();
        v.as_object_mut().unwrap().remove("device_id");
        v["answers"]["members"][0]
            .as_object_mut()
            .unwrap()
            .remove("name");
        assert!(Submission::from_value(&v).is_ok());
    }
}
