//! The guarantee rules: plain functions of a visit's answers that say which of the household's
//! guarantees (两不愁三保障 and safe water) fail, as findings with the contract's stable codes.
//! The household's verdict is read off the same findings, so the two never disagree.
//!
//! | code | severity | raised when | threshold |
//! | --- | --- | --- | --- |
//! | `food_clothing_insecure` | critical | `food_secure` or `clothing_secure` is false (one finding each, subject `guarantee:food` / `guarantee:clothing`) | |
//! | `school_dropout` | critical | a member of compulsory-school age (6 to 15 inclusive on the survey date, from the birth date in the 身份证号) has `dropped_out` | |
//! | `uninsured_member` | warning | a member is not in basic medical insurance | |
//! | `housing_unsafe` | critical | housing graded C or D (dangerous) | |
//! | `water_unsafe` | critical | any of the four water checks (quantity, quality, convenience, guarantee) failed | |
//! | `income_below_line` | warning | income per person per year under the line | `HUIKAN_INCOME_LINE_YUAN`, default 4,000 |

use chrono::{Datelike, NaiveDate};
use huikan_shared::idcard;
use huikan_shared::submission::{Answers, HousingGrade, SchoolStatus, mask_id_number};
use serde::Serialize;

/// Bumped when what a rule finds changes, so findings say which rules made them.
pub const RULE_VERSION: i64 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub severity: &'static str,
    pub detail: String,
    /// What it is about: `guarantee:<name>`, or `member:<masked id number>`.
    pub subject: String,
}

impl Finding {
    fn new(code: &'static str, severity: &'static str, subject: String, detail: String) -> Self {
        Finding {
            code,
            severity,
            detail,
            subject,
        }
    }
}

pub struct Thresholds {
    pub income_line_yuan: f64,
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
