//! Reconciliation: what the visits say about each household's guarantees. So far the guarantee
//! rules ([`rules`]) and the household's verdict, read on request from its current visit in a
//! campaign.

pub mod rules;

use chrono::{DateTime, FixedOffset};
use huikan_shared::submission::Answers;
use serde::Serialize;
use uuid::Uuid;

use self::rules::{Finding, Thresholds, Verdict};
use crate::error::Result;
use crate::http::AppState;
use crate::on_pool;

/// A household's verdict for one campaign, with the findings behind it.
#[derive(Serialize)]
pub struct HouseholdVerdict {
    /// The campaign judged: the one asked for, else the one that started last (none if no
    /// campaign is defined).
    pub campaign: Option<String>,
    /// The visit judged by: the latest approved one, else the latest not rejected; none: every
    /// guarantee is `unknown`.
    pub submission_id: Option<Uuid>,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    pub rule_version: i64,
}

pub async fn household_verdict(
    state: &AppState,
    household_id: &str,
    campaign: Option<&str>,
) -> Result<HouseholdVerdict> {
    let campaign: Option<String> = match campaign {
        Some(campaign) => Some(campaign.to_owned()),
        None => on_pool!(&state.db.read, |p| {
            sqlx::query_scalar(
                "SELECT campaign_id FROM campaigns ORDER BY starts_at DESC, campaign_id LIMIT 1",
            )
            .fetch_optional(p)
            .await
        })?,
    };
    let unknown = |campaign| HouseholdVerdict {
        campaign,
        submission_id: None,
        verdict: Verdict::UNKNOWN,
        findings: Vec::new(),
        rule_version: rules::RULE_VERSION,
    };
    let Some(campaign_id) = campaign.as_deref() else {
        return Ok(unknown(None));
    };
    // A stored visit counts at once; review refines which one does.
    let current: Option<(Uuid, String)> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT submission_id, content FROM submissions
             WHERE household_id = $1 AND campaign = $2 AND review_state <> 'rejected'
             ORDER BY CASE WHEN review_state = 'approved' THEN 0 ELSE 1 END,
                      surveyed_at DESC, seq DESC
             LIMIT 1",
        )
        .bind(household_id)
        .bind(campaign_id)
        .fetch_optional(p)
        .await
    })?;
    let Some((submission_id, content)) = current else {
        return Ok(unknown(campaign));
    };
    #[derive(serde::Deserialize)]
    struct Visit {
        surveyed_at: DateTime<FixedOffset>,
        answers: Answers,
    }
    // Stored visits were checked against the contract when they arrived.
    let visit: Visit = serde_json::from_str(&content).map_err(anyhow::Error::from)?;
    let thresholds = Thresholds {
        income_line_yuan: state.config.income_line_yuan,
    };
    // Ages are reckoned on the local date the visit was made.
    let findings =
        rules::guarantee_findings(&visit.answers, visit.surveyed_at.date_naive(), &thresholds);
    Ok(HouseholdVerdict {
        campaign,
        submission_id: Some(submission_id),
        verdict: Verdict::from_findings(&findings),
        findings,
        rule_version: rules::RULE_VERSION,
    })
}
