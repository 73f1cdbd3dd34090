//! Identity rules: is the visited household the registered one, within the surveyor's villages,
//! and are its people the registered people.

use std::collections::BTreeSet;

use huikan_shared::idcard;
use huikan_shared::submission::mask_id_number;

use super::rules::{Finding, Registered, Visit};

pub fn findings(visit: &Visit, registered: Option<&Registered>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let household = format!("household:{}", visit.household_id);
    match registered {
        None => findings.push(Finding::new(
            "unknown_household",
            "warning",
            household,
            format!(
                "household {} is not in the registry (maybe one it missed: 漏评)",
                visit.household_id
            ),
        )),
        Some(r) if r.removed => findings.push(Finding::new(
            "unknown_household",
            "warning",
            household,
            format!(
                "household {} was removed from the registry",
                visit.household_id
            ),
        )),
        Some(r) => {
            let covered = visit
                .surveyor_scope
                .iter()
                .any(|prefix| r.village_code.starts_with(prefix.as_str()));
            if !covered {
                findings.push(Finding::new(
                    "out_of_scope",
                    "warning",
                    household,
                    format!(
                        "village {} is outside the surveyor's assigned villages ({})",
                        r.village_code,
                        visit.surveyor_scope.join(", ")
                    ),
                ));
            }
            findings.extend(member_mismatch(visit, r));
        }
    }
    for member in &visit.answers.members {
        if let Err(problem) = idcard::validate(&member.id_number) {
            let masked = mask_id_number(&member.id_number);
            findings.push(Finding::new(
                "invalid_id_number",
                "warning",
                format!("member:{masked}"),
                format!("member {masked}: {problem}"),
            ));
        }
    }
    findings
}

/// One finding per member registered but not in the visit, or in the visit but not registered.
fn member_mismatch(visit: &Visit, registered: &Registered) -> Vec<Finding> {
    let visited: BTreeSet<&str> = visit
        .answers
        .members
        .iter()
        .map(|m| m.id_number.as_str())
        .collect();
    let listed: BTreeSet<&str> = registered.member_ids.iter().map(String::as_str).collect();
    let missing = listed
        .difference(&visited)
        .map(|id| (id, "is registered but missing from the visit"));
    let extra = visited
        .difference(&listed)
        .map(|id| (id, "is in the visit but not registered in the household"));
    missing
        .chain(extra)
        .map(|(id, what)| {
            let masked = mask_id_number(id);
            Finding::new(
                "member_mismatch",
                "warning",
                format!("member:{masked}"),
                format!("member {masked} {what}"),
            )
        })
        .collect()
}
