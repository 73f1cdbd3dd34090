//! The console's pages: the queue, one visit beside its registry record, the coverage roll-up,
//! and the review forms. Each calls the API's own function with the session's caller.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, FixedOffset};
use huikan_shared::limits;
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::{Lang, Session, error_page, layout};
use crate::http::AppState;
use crate::http::json::ApiForm;
use crate::http::page::{ApiQuery, PageQuery};
use crate::privacy::UnmaskQuery;
use crate::reconcile::report::{CoverageQuery, coverage_report, csv_response};
use crate::reconcile::rules::CODES;
use crate::review::{CommentBody, DecisionBody, QueueQuery};

const STATES: [(&str, &str, &str); 5] = [
    ("received", "待审核", "received"),
    ("in_review", "审核中", "in review"),
    ("approved", "已通过", "approved"),
    ("rejected", "已驳回", "rejected"),
    ("resurvey_requested", "需重新走访", "resurvey requested"),
];

fn state_name(lang: Lang, state: &str) -> String {
    STATES
        .iter()
        .find(|(s, _, _)| *s == state)
        .map_or_else(|| state.to_owned(), |(_, zh, en)| lang.t(zh, en).to_owned())
}

fn code_name(lang: Lang, code: &str) -> String {
    let chinese = CODES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n);
    match chinese {
        Some(name) if !lang.english => format!("{name} ({code})"),
        _ => code.to_owned(),
    }
}

/// A reviewer reads times on a Beijing clock: the server keeps them in UTC and phones send
/// their own offset, so both are shown in China Standard Time, to the minute.
fn beijing(at: &DateTime<FixedOffset>) -> String {
    at.with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// [`beijing`] for a time kept as RFC 3339 text; other text is shown as it is.
fn beijing_text(value: &Value, key: &str) -> String {
    let raw = text(value, key);
    DateTime::parse_from_rfc3339(raw).map_or_else(|_| raw.to_owned(), |at| beijing(&at))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

fn yes_no(lang: Lang, value: &Value) -> &'static str {
    match value.as_bool() {
        Some(true) => lang.t("是", "yes"),
        Some(false) => lang.t("否", "no"),
        None => "—",
    }
}

#[derive(Deserialize, Default)]
pub struct QueueParams {
    #[serde(flatten)]
    page: PageQuery,
    prefix: Option<String>,
    finding: Option<String>,
    state: Option<String>,
    severity: Option<String>,
}

/// `GET /console/queue`: the reviewer's queue with its filters.
pub async fn queue(
    State(state): State<AppState>,
    session: Session,
    ApiQuery(params): ApiQuery<QueueParams>,
) -> Response {
    let lang = session.lang;
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let query = QueueQuery {
        page: PageQuery {
            since: non_empty(&params.page.since),
            limit: non_empty(&params.page.limit),
        },
        prefix: non_empty(&params.prefix),
        finding: non_empty(&params.finding),
        state: non_empty(&params.state),
        severity: non_empty(&params.severity),
    };
    let page = match crate::review::queue(&state, &session.caller, &query).await {
        Ok(page) => page,
        Err(e) => return error_page(&session, e),
    };
    let selected = |current: &Option<String>, value: &str| current.as_deref() == Some(value);
    let next = {
        let mut q = vec![("since", page.next_cursor.clone())];
        for (key, value) in [
            ("prefix", &query.prefix),
            ("finding", &query.finding),
            ("state", &query.state),
            ("severity", &query.severity),
        ] {
            if let Some(v) = value {
                q.push((key, v.clone()));
            }
        }
        let encoded: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        format!("/console/queue?{}", encoded.join("&"))
    };
    let body = html! {
        form method="get" action="/console/queue" id="filters" {
            label { (lang.t("区划代码前缀", "Division prefix")) " " input name="prefix" value=(query.prefix.clone().unwrap_or_default()) size="12" maxlength="12"; }
            label { (lang.t("问题", "Finding")) " "
                select name="finding" id="finding" {
                    option value="" { (lang.t("全部", "any")) }
                    @for (code, _) in CODES {
                        option value=(code) selected[selected(&query.finding, code)] { (code_name(lang, code)) }
                    }
                }
            }
            label { (lang.t("状态", "State")) " "
                select name="state" {
                    option value="" { (lang.t("待处理", "undecided")) }
                    @for (code, zh, en) in STATES {
                        option value=(code) selected[selected(&query.state, code)] { (lang.t(zh, en)) }
                    }
                }
            }
            label { (lang.t("严重程度", "Severity")) " "
                select name="severity" {
                    option value="" { (lang.t("全部", "any")) }
                    @for (code, zh, en) in [("critical", "严重", "critical"), ("warning", "警告", "warning"), ("info", "提示", "info")] {
                        option value=(code) selected[selected(&query.severity, code)] { (lang.t(zh, en)) }
                    }
                }
            }
            button type="submit" id="apply" { (lang.t("筛选", "Filter")) }
        }
        table id="queue" {
            tr {
                th { (lang.t("走访", "Visit")) } th { (lang.t("户编号", "Household")) }
                th { (lang.t("调查员", "Surveyor")) } th { (lang.t("走访时间（北京时间）", "Surveyed (Beijing time)")) }
                th { (lang.t("状态", "State")) } th { (lang.t("问题", "Findings")) }
                th { (lang.t("认领", "Claimed by")) }
            }
            @for item in &page.items {
                tr {
                    td { a class="visit" href={ "/console/visits/" (item.submission_id) } { (item.submission_id.to_string()[..8]) "…" } }
                    td { (item.household_id) }
                    td { (item.submitted_by) }
                    td { (beijing(&item.surveyed_at.fixed_offset())) }
                    td { (state_name(lang, &item.state)) }
                    td class=[item.severity] {
                        @for (code, n) in item.findings.iter().collect::<BTreeMap<_, _>>() {
                            (code_name(lang, code)) @if *n > 1 { " ×" (n) } br;
                        }
                    }
                    td { (item.claimed_by.clone().unwrap_or_default()) }
                }
            }
        }
        @if page.items.is_empty() { p { (lang.t("没有待审核的走访。", "Nothing to review.")) } }
        @if page.has_more { p { a href=(next) { (lang.t("下一页", "Next page")) } } }
    };
    layout(
        Some(&session),
        lang,
        lang.t("审核队列", "Review queue"),
        body,
    )
    .into_response()
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /console/visits/{id}`: the visit beside the registry record, its photos, findings,
/// near-duplicates side by side, its review and the decision form.
pub async fn visit(
    State(state): State<AppState>,
    session: Session,
    Path(submission_id): Path<String>,
) -> Response {
    let lang = session.lang;
    let view = match crate::submissions::view(
        &state,
        &session.caller,
        &submission_id,
        &UnmaskQuery::default(),
    )
    .await
    {
        Ok(view) => serde_json::to_value(view).unwrap_or_default(),
        Err(e) => return error_page(&session, e),
    };
    let household_id = text(&view, "household_id").to_owned();
    let query = crate::registry::HouseholdQuery {
        campaign: Some(text(&view, "campaign").to_owned()),
        ..Default::default()
    };
    let registered =
        crate::registry::household_view(&state, &session.caller, &household_id, &query)
            .await
            .ok();
    let content = &view["content"];
    let answers = &content["answers"];
    let review_state = text(&view, "review_state").to_owned();
    let undecided = matches!(review_state.as_str(), "received" | "in_review");
    let action = |what: &str| format!("/console/visits/{submission_id}/{what}");
    let lease_minutes = state.config.review_lease_secs.div_ceil(60);

    // Members by (masked) ID number: registered, visited, or both.
    let mut members: BTreeMap<String, (Option<&Value>, Option<&Value>)> = BTreeMap::new();
    if let Some(list) = registered.as_ref().and_then(|r| r["members"].as_array()) {
        for m in list {
            members
                .entry(text(m, "id_number").to_owned())
                .or_default()
                .0 = Some(m);
        }
    }
    if let Some(list) = answers["members"].as_array() {
        for m in list {
            members
                .entry(text(m, "id_number").to_owned())
                .or_default()
                .1 = Some(m);
        }
    }
    let body = html! {
        p {
            (lang.t("户编号", "Household")) ": " strong { (household_id) } " · "
            (lang.t("轮次", "Campaign")) ": " (text(&view, "campaign")) " · "
            (lang.t("走访时间", "Surveyed at")) ": " (beijing_text(content, "surveyed_at")) " · "
            (lang.t("调查员", "Surveyor")) ": " (text(&view, "submitted_by")) " · "
            (lang.t("状态", "State")) ": " strong id="state" { (state_name(lang, &review_state)) }
            @if let Some(claim) = view["claim"].as_object() {
                " · " (lang.t("认领人", "Claimed by")) ": " (claim.get("reviewer").and_then(Value::as_str).unwrap_or(""))
            }
        }
        @if let Some(other) = view["answers_resurvey_of"].as_str() {
            p { (lang.t("本次走访回应重新走访要求：", "This visit answers the resurvey request of ")) a href={ "/console/visits/" (other) } { (other) } }
        }

        h2 { (lang.t("问题", "Findings")) }
        @if view["findings"].as_array().is_none_or(Vec::is_empty) { p { (lang.t("没有问题。", "No findings.")) } }
        ul id="findings" {
            @for f in view["findings"].as_array().into_iter().flatten() {
                li class=(text(f, "severity")) { (code_name(lang, text(f, "code"))) ": " (text(f, "detail")) }
            }
        }

        h2 { (lang.t("登记信息与走访对照", "Registry record beside the visit")) }
        @match &registered {
            None => p class="problem" { (lang.t("该户不在登记册中，或不在你的范围内。", "This household is not in the registry, or not in your scope.")) }
            Some(record) => p {
                (text(record, "township")) " " (text(record, "village")) " · "
                (lang.t("户主", "Head")) ": " (text(record, "head_name")) " · "
                (lang.t("登记住房等级", "Registered housing grade")) ": " (text(record, "housing_grade")) " · "
                (lang.t("走访住房等级", "Visited housing grade")) ": "
                span class=[(text(record, "housing_grade") != text(&answers["housing"], "grade")).then_some("diff")] { (text(&answers["housing"], "grade")) }
            }
        }
        table id="members" {
            tr {
                th { (lang.t("身份证号", "ID number")) }
                th { (lang.t("登记", "Registered")) }
                th { (lang.t("走访", "Visited")) }
                th { (lang.t("在校情况", "School")) }
                th { (lang.t("医保", "Insured")) }
            }
            @for (id, (reg, seen)) in &members {
                tr class=[(reg.is_none() || seen.is_none()).then_some("diff")] {
                    td { (id) }
                    td { @match reg { Some(m) => { (text(m, "name")) " (" (text(m, "relation")) ")" }, None => (lang.t("未登记", "not registered")) } }
                    td { @match seen { Some(m) => { (text(m, "name")) " (" (text(m, "relation")) ")" }, None => (lang.t("本次未见", "missing from the visit")) } }
                    td { @if let Some(m) = seen { (text(m, "school_status")) } }
                    td { @if let Some(m) = seen { (yes_no(lang, &m["insured"])) } }
                }
            }
        }
        table id="answers" {
            tr { th { (lang.t("不愁吃", "Food secure")) } td { (yes_no(lang, &answers["food_secure"])) } }
            tr { th { (lang.t("不愁穿", "Clothing secure")) } td { (yes_no(lang, &answers["clothing_secure"])) } }
            tr { th { (lang.t("饮水", "Water")) } td {
                (text(&answers["water"], "source")) " · "
                @for (key, zh, en) in [("quantity_ok", "水量", "quantity"), ("quality_ok", "水质", "quality"), ("convenience_ok", "取水方便", "convenience"), ("guarantee_ok", "供水保证率", "guarantee")] {
                    (lang.t(zh, en)) " " (yes_no(lang, &answers["water"][key])) "; "
                }
            } }
            tr { th { (lang.t("人均年收入（元）", "Income per person (yuan)")) } td { (answers["income"]["per_capita_yuan"]) } }
        }

        h2 { (lang.t("照片", "Photos")) }
        div class="photos" {
            @for photo in view["photos"].as_array().into_iter().flatten() {
                div class="photo" {
                    a href={ "/v1/blobs/" (text(photo, "sha256")) } target="_blank" {
                        @if let Some(thumbnail) = photo["thumbnail_url"].as_str() {
                            img class="thumbnail" src=(thumbnail) alt=(text(photo, "kind")) width="320";
                        } @else {
                            (lang.t("查看原图", "Open the photo"))
                        }
                    }
                    p {
                        (text(photo, "kind")) br;
                        (lang.t("拍摄时间 (EXIF)", "Taken (EXIF)")) ": " (text(photo, "exif_time")) " " (text(photo, "exif_offset")) br;
                        (lang.t("位置 (EXIF)", "GPS (EXIF)")) ": "
                        @if let Some(gps) = photo["exif_gps"].as_object() {
                            (gps.get("lat").map(Value::to_string).unwrap_or_default()) ", " (gps.get("lon").map(Value::to_string).unwrap_or_default())
                        } @else { "—" }
                    }
                    @for near in photo["near_duplicates"].as_array().into_iter().flatten() {
                        div class="pair near-duplicate" {
                            div {
                                p { (lang.t("本户照片", "This photo")) }
                                @if let Some(thumbnail) = photo["thumbnail_url"].as_str() { img class="thumbnail" src=(thumbnail) width="150"; }
                            }
                            div {
                                p {
                                    (lang.t("疑似相同：户 ", "Looks like household ")) (text(near, "other_household_id"))
                                    " (" (lang.t("差异位数", "bits apart")) " " (near["distance"]) ") "
                                    a href={ "/console/visits/" (text(near, "other_submission_id")) } { (lang.t("查看该走访", "open that visit")) }
                                }
                                a href={ "/v1/blobs/" (text(near, "other_photo")) } target="_blank" {
                                    img class="thumbnail other" src={ "/v1/blobs/" (text(near, "other_photo")) "/thumbnail" } width="150";
                                }
                            }
                        }
                    }
                }
            }
        }

        h2 { (lang.t("审核", "Review")) }
        @if undecided {
            form method="post" action=(action("claim")) {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" id="claim" {
                    (lang.t("认领", "Claim")) " (" (lease_minutes) (lang.t(" 分钟)", " minutes)"))
                }
            }
            form method="post" action=(action("decision")) id="decision" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="expected_state" value=(review_state);
                p {
                    label { input type="radio" name="decision" value="approve" required; " " (lang.t("通过", "Approve")) }
                    label { input type="radio" name="decision" value="reject"; " " (lang.t("驳回", "Reject")) }
                    label { input type="radio" name="decision" value="resurvey" id="resurvey"; " " (lang.t("要求重新走访", "Request a resurvey")) }
                }
                p { label { (lang.t("理由（驳回或重新走访时必填）", "Reason (required to reject or resurvey)")) br; textarea name="reason" id="reason" maxlength=(limits::TEXT) {} } }
                button type="submit" id="decide" { (lang.t("提交决定", "Decide")) }
            }
        }
        @for d in view["decisions"].as_array().into_iter().flatten() {
            p { (beijing_text(d, "decided_at")) " " (text(d, "reviewer")) ": " (state_name(lang, text(d, "state"))) " — " (text(d, "reason")) }
        }
        h3 { (lang.t("备注", "Comments")) }
        @for c in view["comments"].as_array().into_iter().flatten() {
            p { (beijing_text(c, "created_at")) " " (text(c, "author")) ": " (text(c, "text")) }
        }
        form method="post" action=(action("comments")) {
            input type="hidden" name="csrf" value=(session.csrf);
            textarea name="text" maxlength=(limits::TEXT) {}
            br;
            button type="submit" { (lang.t("添加备注", "Add a comment")) }
        }
    };
    layout(Some(&session), lang, lang.t("走访详情", "Visit"), body).into_response()
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default, deserialize_with = "limits::text::<{ limits::ID }, _>")]
    csrf: String,
}

fn back_to(submission_id: &str) -> Response {
    Redirect::to(&format!("/console/visits/{submission_id}")).into_response()
}

/// `POST /console/visits/{id}/claim`.
pub async fn claim(
    State(state): State<AppState>,
    session: Session,
    Path(submission_id): Path<String>,
    ApiForm(form): ApiForm<CsrfOnly>,
) -> Response {
    let result = async {
        session.check(&form.csrf)?;
        crate::review::claim(&state, &session.caller, &submission_id).await
    }
    .await;
    match result {
        Ok(_) => back_to(&submission_id),
        Err(e) => error_page(&session, e),
    }
}

#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default, deserialize_with = "limits::text::<{ limits::ID }, _>")]
    csrf: String,
    #[serde(default, deserialize_with = "limits::text::<{ limits::NAME }, _>")]
    decision: String,
    #[serde(default, deserialize_with = "limits::text::<{ limits::TEXT }, _>")]
    reason: String,
    #[serde(default, deserialize_with = "limits::text::<{ limits::NAME }, _>")]
    expected_state: String,
}

/// `POST /console/visits/{id}/decision`.
pub async fn decide(
    State(state): State<AppState>,
    session: Session,
    Path(submission_id): Path<String>,
    ApiForm(form): ApiForm<DecisionForm>,
) -> Response {
    let result = async {
        session.check(&form.csrf)?;
        let body = DecisionBody {
            decision: form.decision,
            reason: Some(form.reason),
            expected_state: form.expected_state,
        };
        crate::review::decide(&state, &session.caller, &submission_id, body).await
    }
    .await;
    match result {
        Ok(_) => back_to(&submission_id),
        Err(e) => error_page(&session, e),
    }
}

#[derive(Deserialize)]
pub struct CommentForm {
    #[serde(default, deserialize_with = "limits::text::<{ limits::ID }, _>")]
    csrf: String,
    #[serde(default, deserialize_with = "limits::text::<{ limits::TEXT }, _>")]
    text: String,
}

/// `POST /console/visits/{id}/comments`.
pub async fn comment(
    State(state): State<AppState>,
    session: Session,
    Path(submission_id): Path<String>,
    ApiForm(form): ApiForm<CommentForm>,
) -> Response {
    let result = async {
        session.check(&form.csrf)?;
        crate::review::comment(
            &state,
            &session.caller,
            &submission_id,
            CommentBody { text: form.text },
        )
        .await
    }
    .await;
    match result {
        Ok(_) => back_to(&submission_id),
        Err(e) => error_page(&session, e),
    }
}

fn coverage_query(query: CoverageQuery) -> CoverageQuery {
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    CoverageQuery {
        campaign: non_empty(query.campaign),
        level: non_empty(query.level),
        prefix: non_empty(query.prefix),
    }
}

/// `GET /console/coverage`: the roll-up by township or village.
pub async fn coverage(
    State(state): State<AppState>,
    session: Session,
    ApiQuery(query): ApiQuery<CoverageQuery>,
) -> Response {
    let lang = session.lang;
    let query = coverage_query(query);
    let report = match coverage_report(&state, &session.caller, &query).await {
        Ok(report) => report,
        Err(e) => return error_page(&session, e),
    };
    let csv = format!(
        "/console/coverage.csv?level={}&prefix={}&campaign={}",
        report.level,
        urlencode(query.prefix.as_deref().unwrap_or("")),
        urlencode(&report.campaign)
    );
    let codes: Vec<&str> = CODES
        .iter()
        .map(|(code, _)| *code)
        .filter(|code| {
            report
                .items
                .iter()
                .any(|u| u.open_findings.contains_key(*code))
        })
        .collect();
    let body = html! {
        form method="get" action="/console/coverage" {
            label { (lang.t("层级", "Level")) " "
                select name="level" {
                    option value="township" selected[report.level == "township"] { (lang.t("乡镇", "township")) }
                    option value="village" selected[report.level == "village"] { (lang.t("行政村", "village")) }
                }
            }
            label { (lang.t("区划代码前缀", "Division prefix")) " " input name="prefix" value=(query.prefix.clone().unwrap_or_default()) size="12" maxlength="12"; }
            input type="hidden" name="campaign" value=(report.campaign);
            button type="submit" { (lang.t("查看", "Show")) }
            " " a href=(csv) { (lang.t("下载 CSV（Excel）", "Download CSV (Excel)")) }
        }
        p { (lang.t("轮次", "Campaign")) ": " (report.campaign) " · "
            (lang.t("未匹配登记户的走访", "Visits naming no registered household")) ": " (report.unknown_household_visits) }
        table id="coverage" {
            tr {
                th { (lang.t("代码", "Code")) } th { (lang.t("名称", "Name")) }
                th { (lang.t("登记户数", "Registered")) } th { (lang.t("已走访", "Surveyed")) }
                th { (lang.t("审核通过", "Approved")) } th { (lang.t("保障均达标", "All guarantees ok")) }
                @for code in &codes { th { (code_name(lang, code)) } }
            }
            @for unit in &report.items {
                tr {
                    td { (unit.code) } td { (unit.name) }
                    td { (unit.registered) } td { (unit.surveyed) } td { (unit.approved) } td { (unit.all_ok) }
                    @for code in &codes { td { (unit.open_findings.get(*code).copied().unwrap_or(0)) } }
                }
            }
        }
    };
    layout(Some(&session), lang, lang.t("覆盖情况", "Coverage"), body).into_response()
}

/// `GET /console/coverage.csv`: the same roll-up as the county office's spreadsheet.
pub async fn coverage_csv(
    State(state): State<AppState>,
    session: Session,
    ApiQuery(query): ApiQuery<CoverageQuery>,
) -> Response {
    let result = async {
        let report = coverage_report(&state, &session.caller, &coverage_query(query)).await?;
        csv_response(&report)
    }
    .await;
    match result {
        Ok(response) => response,
        Err(e) => error_page(&session, e),
    }
}
