//! The rules: plain functions of a visit, the household's registry record, its photos' facts and
//! the household's other visits, returning findings with the contract's stable codes. What a
//! rule finds does not depend on when it runs, so reconciling again finds the same.
//!
//! | code | severity | raised when | threshold |
//! | --- | --- | --- | --- |
//! | `unknown_household` | warning | the visit names no household of the registry, or a removed one (maybe one the registry missed: 漏评) | |
//! | `out_of_scope` | warning | the household's village is outside the surveyor's assigned villages | |
//! | `invalid_id_number` | warning | a member's 身份证号 fails GB 11643 (length, birth date or check character) | |
//! | `member_mismatch` | warning | a registered member is missing from the visit, or a member of the visit is not registered (one finding per member) | |
//! | `unknown_campaign` | warning | the visit names a campaign that is not defined | |
//! | `missing_required_photo` | warning | a photo kind the campaign requires is not among the visit's photos | the campaign's `required_photos` |
//! | `photo_time_implausible` | warning | a photo's EXIF time is more than the limit from `surveyed_at`, or before the campaign starts (an EXIF time without offset is read in the campaign's time zone) | `HUIKAN_PHOTO_TIME_HOURS`, default 12 |
//! | `location_far_from_household` | warning | the visit's location, a photo's reported location (each farther than the limit plus its accuracy) or a photo's EXIF GPS (farther than the limit) from the registered house, all in WGS-84 | `HUIKAN_FAR_METRES`, default 500 |
//! | `mock_location` | critical | the visit's or a photo's reported fix has accuracy 0 or is marked `mock` | |
//! | `conflicting_resurvey` | warning | an earlier visit of the household in the same campaign, neither rejected nor sent back for resurvey, disagrees on a guarantee (raised on the later visit) | |
//! | `photo_reused_exact`, `photo_near_duplicate` | critical | see `evidence::reuse`: raised by the photo check, not here | `HUIKAN_NEAR_DUPLICATE_BITS` |
//! | `food_clothing_insecure` | critical | `food_secure` or `clothing_secure` is false (one finding each, subject `guarantee:food` / `guarantee:clothing`) | |
//! | `school_dropout` | critical | a member of compulsory-school age (6 to 15 inclusive on the survey date, from the birth date in the 身份证号) has `dropped_out` | |
//! | `uninsured_member` | warning | a member is not in basic medical insurance | |
//! | `housing_unsafe` | critical | housing graded C or D (dangerous) | |
//! | `water_unsafe` | critical | any of the four water checks (quantity, quality, convenience, guarantee) failed | |
//! | `income_below_line` | warning | income per person per year under the line | `HUIKAN_INCOME_LINE_YUAN`, default 4,000 |
//!
//! The household's verdict is read off the guarantee findings, so the two never disagree.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use huikan_shared::idcard;
use huikan_shared::submission::{
    Answers, HousingGrade, Location, PhotoKind, SchoolStatus, mask_id_number,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Bumped when what a rule finds changes, so findings say which rules made them.
pub const RULE_VERSION: i64 = 2;

/// Every finding code of the contract, with the name the county office reads.
pub const CODES: [(&str, &str); 18] = [
    ("unknown_household", "未登记户"),
    ("out_of_scope", "超出负责村范围"),
    ("invalid_id_number", "身份证号无效"),
    ("member_mismatch", "家庭成员与登记不符"),
    ("missing_required_photo", "缺少必需照片"),
    ("photo_time_implausible", "照片时间异常"),
    ("location_far_from_household", "位置远离登记住址"),
    ("photo_reused_exact", "照片重复使用"),
    ("photo_near_duplicate", "照片疑似翻拍"),
    ("conflicting_resurvey", "同轮复查结果矛盾"),
    ("unknown_campaign", "未知调查轮次"),
    ("mock_location", "虚拟定位"),
    ("housing_unsafe", "住房不安全"),
    ("water_unsafe", "饮水不安全"),
    ("school_dropout", "义务教育阶段辍学"),
    ("uninsured_member", "未参加基本医疗保险"),
    ("food_clothing_insecure", "吃穿未保障"),
    ("income_below_line", "收入低于标准线"),
];

/// The contract's own spelling of a code, if it is one.
pub fn known_code(code: &str) -> Option<&'static str> {
    CODES.iter().map(|(c, _)| *c).find(|c| *c == code)
}

/// The codes the photo check (`evidence::reuse`) raises; every other code is reconciliation's.
pub const PHOTO_CHECK_CODES: [&str; 2] = ["photo_reused_exact", "photo_near_duplicate"];

/// The codes behind the verdict.
pub const GUARANTEE_CODES: [&str; 6] = [
    "food_clothing_insecure",
    "school_dropout",
    "uninsured_member",
    "housing_unsafe",
    "water_unsafe",
    "income_below_line",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub severity: &'static str,
    pub detail: String,
    /// What it is about, unique per code within a visit: `guarantee:<name>`,
    /// `member:<masked id number>`, `photo:<sha256>`, `location:visit`, `kind:<photo kind>` ….
    pub subject: String,
    /// What it points to, for a reviewer to follow (the other visit, the distance …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Finding {
    pub fn new(
        code: &'static str,
        severity: &'static str,
        subject: String,
        detail: String,
    ) -> Self {
        Finding {
            code,
            severity,
            detail,
            subject,
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

pub struct Thresholds {
    pub income_line_yuan: f64,
    pub photo_time_hours: f64,
    pub far_metres: f64,
}

/// A stored visit, as the rules see it.
pub struct Visit {
    pub submission_id: Uuid,
    pub household_id: String,
    pub campaign: String,
    pub seq: i64,
    pub review_state: String,
    pub duplicate_of: Option<Uuid>,
    /// The division prefixes the surveyor was assigned.
    pub surveyor_scope: Vec<String>,
    pub surveyed_at: DateTime<FixedOffset>,
    pub location: Location,
    pub answers: Answers,
    pub photos: Vec<VisitPhoto>,
}

pub struct VisitPhoto {
    pub sha256: String,
    pub kind: PhotoKind,
    /// Where the phone said it was taken.
    pub location: Option<Location>,
    /// What its bytes say, once processed.
    pub exif: Option<Exif>,
}

#[derive(Default)]
pub struct Exif {
    /// Local time as the camera wrote it.
    pub taken_at: Option<NaiveDateTime>,
    pub offset: Option<FixedOffset>,
    /// WGS-84, as cameras write it.
    pub gps: Option<(f64, f64)>,
}

/// The household as registered.
pub struct Registered {
    pub village_code: String,
    pub removed: bool,
    /// The house, in WGS-84 (converted at import).
    pub location: Option<(f64, f64)>,
    pub member_ids: Vec<String>,
}

pub struct Campaign {
    pub starts_at: DateTime<Utc>,
    pub timezone: chrono_tz::Tz,
    pub required_photos: Vec<String>,
}

/// Every finding of reconciliation for one visit: identity, evidence, guarantees. `earlier` are
/// the household's visits in the same campaign stored before this one.
pub fn visit_findings(
    visit: &Visit,
    registered: Option<&Registered>,
    campaign: Option<&Campaign>,
    earlier: &[(&Visit, Verdict)],
    thresholds: &Thresholds,
) -> Vec<Finding> {
    let mut findings = super::identity::findings(visit, registered);
    findings.extend(super::evidence::findings(
        visit, registered, campaign, thresholds,
    ));
    let guarantees = visit_guarantee_findings(visit, thresholds);
    let verdict = Verdict::from_findings(&guarantees);
    findings.extend(super::evidence::conflicting_resurvey(
        visit, &verdict, earlier,
    ));
    findings.extend(guarantees);
    // One finding per code and subject (two members may mask alike).
    let mut seen = std::collections::HashSet::new();
    findings.retain(|f| seen.insert((f.code, f.subject.clone())));
    findings
}

/// The guarantee findings of a visit, ages reckoned on the local date it was made.
pub fn visit_guarantee_findings(visit: &Visit, thresholds: &Thresholds) -> Vec<Finding> {
    guarantee_findings(&visit.answers, visit.surveyed_at.date_naive(), thresholds)
}

/// Every guarantee finding of a visit surveyed on `surveyed_on` (its local date).
pub fn guarantee_findings(
    answers: &Answers,
    surveyed_on: NaiveDate,
    thresholds: &Thresholds,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (secure, name, chinese) in [
        (answers.food_secure, "food", "不愁吃"),
        (answers.clothing_secure, "clothing", "不愁穿"),
    ] {
        if !secure {
            findings.push(Finding::new(
                "food_clothing_insecure",
                "critical",
                format!("guarantee:{name}"),
                format!("{name} is not secure ({chinese} fails)"),
            ));
        }
    }
    for member in &answers.members {
        let masked = mask_id_number(&member.id_number);
        let school_age = idcard::birth_date(&member.id_number)
            .is_some_and(|born| is_compulsory_school_age(born, surveyed_on));
        if school_age && member.school_status == SchoolStatus::DroppedOut {
            findings.push(Finding::new(
                "school_dropout",
                "critical",
                format!("member:{masked}"),
                format!("member {masked} is of compulsory-school age and has dropped out"),
            ));
        }
        if !member.insured {
            findings.push(Finding::new(
                "uninsured_member",
                "warning",
                format!("member:{masked}"),
                format!("member {masked} has no basic medical insurance"),
            ));
        }
    }
    if matches!(answers.housing.grade, HousingGrade::C | HousingGrade::D) {
        findings.push(Finding::new(
            "housing_unsafe",
            "critical",
            "guarantee:housing".to_owned(),
            format!(
                "housing is graded {:?}, a dangerous house",
                answers.housing.grade
            ),
        ));
    }
    let water = &answers.water;
    let failed: Vec<&str> = [
        (water.quantity_ok, "quantity"),
        (water.quality_ok, "quality"),
        (water.convenience_ok, "convenience"),
        (water.guarantee_ok, "guarantee"),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, name)| name)
    .collect();
    if !failed.is_empty() {
        findings.push(Finding::new(
            "water_unsafe",
            "critical",
            "guarantee:water".to_owned(),
            format!("drinking water fails on {}", failed.join(", ")),
        ));
    }
    let income = answers.income.per_capita_yuan;
    if income < thresholds.income_line_yuan {
        findings.push(Finding::new(
            "income_below_line",
            "warning",
            "guarantee:income".to_owned(),
            format!(
                "income of {income} yuan per person per year is under the line of {}",
                thresholds.income_line_yuan
            ),
        ));
    }
    findings
}

/// Compulsory-school age: 6 to 15 years inclusive on the given date, so a child turning 16 that
/// day is past it and one turning 6 is in it.
pub fn is_compulsory_school_age(born: NaiveDate, on: NaiveDate) -> bool {
    let had_birthday = (on.month(), on.day()) >= (born.month(), born.day());
    let age = on.year() - born.year() - i32::from(!had_birthday);
    (6..=15).contains(&age)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failing,
    Unknown,
}

/// Each guarantee as the contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub food: Status,
    pub clothing: Status,
    pub education: Status,
    pub medical: Status,
    pub housing: Status,
    pub water: Status,
    pub income: Status,
}

impl Verdict {
    /// No visit to judge by.
    pub const UNKNOWN: Verdict = Verdict {
        food: Status::Unknown,
        clothing: Status::Unknown,
        education: Status::Unknown,
        medical: Status::Unknown,
        housing: Status::Unknown,
        water: Status::Unknown,
        income: Status::Unknown,
    };

    fn named(&self) -> [(&'static str, Status); 7] {
        [
            ("food", self.food),
            ("clothing", self.clothing),
            ("education", self.education),
            ("medical", self.medical),
            ("housing", self.housing),
            ("water", self.water),
            ("income", self.income),
        ]
    }

    /// Every guarantee holds.
    pub fn all_ok(&self) -> bool {
        self.named().iter().all(|(_, status)| *status == Status::Ok)
    }

    /// The guarantees on which two verdicts differ.
    pub fn differences(&self, other: &Verdict) -> Vec<&'static str> {
        self.named()
            .iter()
            .zip(other.named())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((name, _), _)| *name)
            .collect()
    }

    /// A visit's verdict from its guarantee findings: a guarantee fails exactly when a finding
    /// says so, and holds otherwise (`education` holds for a household with no school-age child).
    pub fn from_findings(findings: &[Finding]) -> Verdict {
        let failing = |code: &str, subject: Option<&str>| {
            if findings
                .iter()
                .any(|f| f.code == code && subject.is_none_or(|s| f.subject == s))
            {
                Status::Failing
            } else {
                Status::Ok
            }
        };
        Verdict {
            food: failing("food_clothing_insecure", Some("guarantee:food")),
            clothing: failing("food_clothing_insecure", Some("guarantee:clothing")),
            education: failing("school_dropout", None),
            medical: failing("uninsured_member", None),
            housing: failing("housing_unsafe", None),
            water: failing("water_unsafe", None),
            income: failing("income_below_line", None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's example answers, edited.
    fn answers(edit: impl FnOnce(&mut serde_json::Value)) -> Answers {
        let mut sample = serde_json::json!({
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
        });
        edit(&mut sample);
        serde_json::from_value(sample).unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    const LINE: Thresholds = Thresholds {
        income_line_yuan: 4000.0,
        photo_time_hours: 12.0,
        far_metres: 500.0,
    };

    #[test]
    fn school_age_runs_from_the_sixth_birthday_to_the_day_before_the_sixteenth() {
        let born = date("2010-03-02");
        assert!(!is_compulsory_school_age(born, date("2016-03-01")));
        assert!(is_compulsory_school_age(born, date("2016-03-02")));
        assert!(is_compulsory_school_age(born, date("2026-03-01")));
        assert!(!is_compulsory_school_age(born, date("2026-03-02")));
    }

    #[test]
    fn a_sound_household_has_no_guarantee_finding() {
        let sound = answers(|_| {});
        let findings = guarantee_findings(&sound, date("2020-03-02"), &LINE);
        assert_eq!(findings, vec![], "the sample visit is sound");
        let verdict = Verdict::from_findings(&findings);
        assert_eq!(verdict.food, Status::Ok);
        assert_eq!(verdict.education, Status::Ok);
    }

    #[test]
    fn each_failing_guarantee_is_found_and_kept_apart() {
        let failing = answers(|a| {
            a["clothing_secure"] = false.into();
            a["housing"]["grade"] = "D".into();
            a["water"]["quality_ok"] = false.into();
            a["income"]["per_capita_yuan"] = 3999.5.into();
            a["members"][0]["insured"] = false.into();
        });
        let findings = guarantee_findings(&failing, date("2020-03-02"), &LINE);
        let codes: Vec<&str> = findings.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            [
                "food_clothing_insecure",
                "uninsured_member",
                "housing_unsafe",
                "water_unsafe",
                "income_below_line"
            ]
        );
        assert!(findings.iter().all(|f| !f.subject.contains("19800101")));
        let verdict = Verdict::from_findings(&findings);
        assert_eq!(
            (verdict.food, verdict.clothing, verdict.medical),
            (Status::Ok, Status::Failing, Status::Failing)
        );
        assert_eq!(
            (verdict.housing, verdict.water, verdict.income),
            (Status::Failing, Status::Failing, Status::Failing)
        );
    }

    #[test]
    fn income_exactly_at_the_line_holds() {
        let at_line = answers(|a| a["income"]["per_capita_yuan"] = 4000.into());
        assert!(guarantee_findings(&at_line, date("2020-03-02"), &LINE).is_empty());
    }

    #[test]
    fn a_dropout_counts_only_at_compulsory_school_age() {
        // Born 2004-03-02: 15 the day before the visit of 2020-03-01, 16 on 2020-03-02.
        let id = with_check_character("41032720040302123");
        let dropout = answers(|a| {
            let mut child = a["members"][0].clone();
            child["id_number"] = id.clone().into();
            child["relation"] = "child".into();
            child["school_status"] = "dropped_out".into();
            a["members"].as_array_mut().unwrap().push(child);
        });
        let on = |d| {
            let findings = guarantee_findings(&dropout, date(d), &LINE);
            Verdict::from_findings(&findings).education
        };
        assert_eq!(on("2020-03-01"), Status::Failing);
        assert_eq!(on("2020-03-02"), Status::Ok);
    }

    fn with_check_character(first17: &str) -> String {
        let digits: [u8; 17] = first17.as_bytes().try_into().unwrap();
        format!("{first17}{}", idcard::check_character(&digits))
    }
}
