//! The web console at `/console/` for reviewers and auditors: server-rendered pages (maud), in
//! Chinese with English as a switch, and almost no JavaScript. Every page and form calls the same
//! functions as the API with the same `Caller`, so the console can do nothing an API client of
//! that role could not, and nothing more.
//!
//! A session is the bearer token of a login, kept in an HttpOnly, SameSite=Strict cookie (Secure
//! when served over HTTPS). Forms carry a CSRF token derived from the session token, checked on
//! every POST; through the API, the cookie stands for the token on reads only (the photos on
//! the pages), so a forged cross-site request changes nothing either way. The login form itself
//! carries a token that must match a cookie set with the form (double submit), so another site
//! cannot log a reviewer's browser into an account of its choosing.

mod pages;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use huikan_shared::limits;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::auth::{SESSION_COOKIE, session_cookie};
use crate::error::AppError;
use crate::http::json::ApiForm;
use crate::http::{AppState, PeerAddress};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/queue") }))
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/queue") }),
        )
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/lang/{lang}", get(switch_language))
        .route("/console/queue", get(pages::queue))
        .route("/console/visits/{submission_id}", get(pages::visit))
        .route("/console/visits/{submission_id}/claim", post(pages::claim))
        .route(
            "/console/visits/{submission_id}/decision",
            post(pages::decide),
        )
        .route(
            "/console/visits/{submission_id}/comments",
            post(pages::comment),
        )
        .route("/console/coverage", get(pages::coverage))
        .route("/console/coverage.csv", get(pages::coverage_csv))
}

const LANG_COOKIE: &str = "huikan_lang";
/// The login form's own CSRF token, set with the form, sent back by the same browser only.
const LOGIN_COOKIE: &str = "huikan_login";

/// The page language: Chinese unless English was chosen.
#[derive(Clone, Copy)]
pub struct Lang {
    english: bool,
}

impl Lang {
    fn of(headers: &HeaderMap) -> Lang {
        let english = cookie(headers, LANG_COOKIE) == Some("en");
        Lang { english }
    }

    /// The Chinese or the English text.
    pub fn t<'a>(self, zh: &'a str, en: &'a str) -> &'a str {
        if self.english { en } else { zh }
    }

    fn code(self) -> &'static str {
        if self.english { "en" } else { "zh-CN" }
    }
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A logged-in console user: the API caller behind the session, the form token and the
/// language. Without a valid session, pages send the browser to the login.
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    pub lang: Lang,
}

fn csrf_of(token: &str) -> String {
    hex::encode(&Sha256::digest(format!("huikan console csrf {token}"))[..16])
}

impl Session {
    /// Refuses a form not made by one of this session's pages.
    pub fn check(&self, csrf: &str) -> Result<(), AppError> {
        if csrf == self.csrf {
            Ok(())
        } else {
            Err(AppError::forbidden(
                "the form is stale or not from this console; reload the page",
            ))
        }
    }
}

pub struct ToLogin;

impl IntoResponse for ToLogin {
    fn into_response(self) -> Response {
        Redirect::to("/console/login").into_response()
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ToLogin;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ToLogin> {
        let token = session_cookie(&parts.headers).ok_or(ToLogin)?;
        let caller = Caller::from_token(state, token)
            .await
            .map_err(|_| ToLogin)?;
        Ok(Session {
            caller,
            csrf: csrf_of(token),
            lang: Lang::of(&parts.headers),
        })
    }
}

const STYLE: &str = r#"
body { font-family: "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif; margin: 0; color: #222; }
header { background: #8b1a1a; color: #fff; padding: .5rem 1rem; display: flex; gap: 1.5rem; align-items: center; }
header a, header button { color: #fff; }
header button { background: none; border: 1px solid #fff; border-radius: 3px; cursor: pointer; }
header .who { margin-left: auto; }
main { padding: 1rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.diff { background: #fde2e2; }
.critical { color: #b00020; font-weight: bold; }
.warning { color: #9a6700; }
.photos { display: flex; flex-wrap: wrap; gap: 1rem; }
.photo { border: 1px solid #ccc; padding: .5rem; max-width: 340px; }
.pair { display: flex; gap: .5rem; align-items: flex-start; border: 2px solid #b00020; padding: .5rem; margin: .5rem 0; }
.side { display: flex; gap: 2rem; flex-wrap: wrap; }
.problem { background: #fde2e2; border: 1px solid #b00020; padding: .5rem 1rem; }
form.inline { display: inline; }
label { margin-right: 1rem; }
textarea { width: 30rem; height: 4rem; }
"#;

/// A page with the console's header.
pub fn layout(session: Option<&Session>, lang: Lang, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · 回看" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "回看 huikan" }
                    @if session.is_some() {
                        a href="/console/queue" { (lang.t("审核队列", "Review queue")) }
                        a href="/console/coverage" { (lang.t("覆盖情况", "Coverage")) }
                    }
                    span class="who" {
                        a href="/console/lang/zh" { "中文" } " | " a href="/console/lang/en" { "English" }
                        @if let Some(session) = session {
                            " · " (session.caller.username) " "
                            form class="inline" method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(session.csrf);
                                button type="submit" { (lang.t("退出", "Log out")) }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// An error as a page, with the API's status and detail.
pub fn error_page(session: &Session, error: AppError) -> Response {
    let lang = session.lang;
    let (status, detail) = match error {
        AppError::Problem(problem) => (problem.status(), problem.detail.clone()),
        AppError::Internal(e) => {
            tracing::error!(error = ?e, "console page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server failed; try again".to_owned(),
            )
        }
    };
    let body = html! {
        p class="problem" { (detail) }
        p { a href="javascript:history.back()" { (lang.t("返回", "Back")) } }
    };
    (
        status,
        layout(
            Some(session),
            lang,
            lang.t("出错了", "Something went wrong"),
            body,
        ),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
struct LoginForm {
    #[serde(default, deserialize_with = "limits::text::<{ limits::NAME }, _>")]
    username: String,
    #[serde(default, deserialize_with = "limits::text::<{ limits::PASSWORD }, _>")]
    password: String,
    #[serde(default, deserialize_with = "limits::text::<{ limits::ID }, _>")]
    csrf: String,
}

/// The login page: the form with a fresh token, and the cookie it must match.
fn login_form(status: StatusCode, lang: Lang, problem: Option<&str>) -> Response {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let page = layout(
        None,
        lang,
        lang.t("登录", "Log in"),
        html! {
            @if let Some(problem) = problem { p class="problem" { (problem) } }
            form method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(token);
                p { label { (lang.t("用户名", "Username")) " " input name="username" id="username" autocomplete="username" maxlength=(limits::NAME) required; } }
                p { label { (lang.t("密码", "Password")) " " input name="password" id="password" type="password" autocomplete="current-password" maxlength=(limits::PASSWORD) required; } }
                p { button type="submit" id="login" { (lang.t("登录", "Log in")) } }
            }
        },
    );
    let mut response = (status, page).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={token}; Path=/console/login; HttpOnly; SameSite=Strict"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn login_page(headers: HeaderMap) -> Response {
    login_form(StatusCode::OK, Lang::of(&headers), None)
}

async fn login(
    State(state): State<AppState>,
    PeerAddress(address): PeerAddress,
    headers: HeaderMap,
    ApiForm(form): ApiForm<LoginForm>,
) -> Response {
    let lang = Lang::of(&headers);
    if form.csrf.is_empty() || cookie(&headers, LOGIN_COOKIE) != Some(form.csrf.as_str()) {
        return login_form(
            StatusCode::FORBIDDEN,
            lang,
            Some(lang.t(
                "登录页面已过期，请重新登录",
                "The login page had expired; please log in again",
            )),
        );
    }
    match crate::auth::login(
        &state,
        &form.username,
        form.password,
        Some("console".to_owned()),
        address,
    )
    .await
    {
        Ok(issued) => {
            let secure = headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes() == b"https");
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                issued.token,
                (issued.expires_at - chrono::Utc::now())
                    .num_seconds()
                    .max(0),
                if secure { "; Secure" } else { "" }
            );
            let mut response = Redirect::to("/console/queue").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            // The login form's token has served its purpose.
            if let Ok(expired) =
                HeaderValue::from_str(&format!("{LOGIN_COOKIE}=; Path=/console/login; Max-Age=0"))
            {
                response.headers_mut().append(header::SET_COOKIE, expired);
            }
            response
        }
        Err(AppError::Problem(p)) if p.code == "rate_limited" => {
            let mut response = login_form(
                StatusCode::TOO_MANY_REQUESTS,
                lang,
                Some(lang.t(
                    "密码错误次数过多，请稍后再试",
                    "Too many wrong passwords; please try again later",
                )),
            );
            crate::error::set_retry_after(&p, &mut response);
            response
        }
        Err(_) => login_form(
            StatusCode::UNAUTHORIZED,
            lang,
            Some(lang.t("用户名或密码错误", "Wrong username or password")),
        ),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default, deserialize_with = "limits::text::<{ limits::ID }, _>")]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    session: Session,
    ApiForm(form): ApiForm<CsrfForm>,
) -> Response {
    if let Err(e) = session.check(&form.csrf) {
        return error_page(&session, e);
    }
    if let Err(e) = crate::auth::revoke_own(&state, &session.caller).await {
        return error_page(&session, e);
    }
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("huikan_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

async fn switch_language(Path(lang): Path<String>, headers: HeaderMap) -> Response {
    let value = match lang.as_str() {
        "en" => "en",
        "zh" => "zh",
        _ => return AppError::not_found("the console speaks zh and en").into_response(),
    };
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.find("/console/").map(|i| r[i..].to_owned()))
        .unwrap_or_else(|| "/console/queue".to_owned());
    let mut response = Redirect::to(&back).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={value}; Path=/console; SameSite=Lax; Max-Age=31536000"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
