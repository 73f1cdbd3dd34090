//! A small typed client over reqwest for the tests and the load generator.

use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub user: Value,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .build()
            .expect("HTTP client");
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token,
            user: Value::Null,
            http,
        }
    }

    /// Logs in and returns a client carrying the token; panics on failure.
    pub async fn login(&self, username: &str, password: &str) -> Api {
        let response = self
            .post_json(
                "/v1/auth/token",
                &serde_json::json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(response.status(), 200, "login of {username}");
        let body: Value = response.json().await.expect("token JSON");
        Api {
            token: body["token"].as_str().map(str::to_owned),
            user: body["user"].clone(),
            ..self.clone()
        }
    }

    /// The same identity against another server process.
    pub fn at(&self, base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }

    pub fn username(&self) -> String {
        self.user["username"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// A request on this client's connections without its bearer token (for other schemes).
    pub fn request_without_token(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.expect("GET")
    }

    /// GET, following a redirect to a presigned URL (photos and thumbnails in the S3 store).
    pub async fn get_object(&self, path: &str) -> Response {
        let response = self.get(path).await;
        if response.status() != 307 {
            return response;
        }
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        reqwest::get(location).await.expect("GET the presigned URL")
    }

    /// GET expecting 200 and a JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("a JSON body")
    }

    pub async fn head(&self, path: &str) -> Response {
        self.request(Method::HEAD, path).send().await.expect("HEAD")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PUT, path)
            .json(body)
            .send()
            .await
            .expect("PUT")
    }

    /// Sends raw bytes as the body of a POST with the given content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.request(Method::POST, path)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    /// PUTs a photo under its hash.
    pub async fn put_blob(&self, sha256: &str, bytes: Vec<u8>) -> Response {
        self.request(Method::PUT, &format!("/v1/blobs/{sha256}"))
            .header("content-type", "image/jpeg")
            .body(bytes)
            .send()
            .await
            .expect("PUT blob")
    }
}

/// Reads a problem+json answer, checking its status and code.
pub async fn expect_problem(response: Response, status: u16, code: &str) -> Value {
    let actual = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (actual, body["code"].as_str().unwrap_or_default()),
        (status, code),
        "body: {body}"
    );
    assert_eq!(content_type, "application/problem+json");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "a detail is required: {body}"
    );
    body
}

/// Sends a request by hand over TCP: the head as given, then `body`, then closes the sending
/// side, as a phone losing its signal mid-upload does. Returns the status and body answered.
pub async fn send_and_hang_up(base: &str, head: &str, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    stream.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b.trim()).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

/// Logs in through the console's form as a browser does: loads the form for its token and the
/// cookie that token must match, then posts it. Gives the status of the post and the session
/// cookie (`name=value`) it set, if any.
pub async fn console_login(
    base: &str,
    username: &str,
    password: &str,
) -> reqwest::Result<(reqwest::StatusCode, Option<String>)> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = http.get(format!("{base}/console/login")).send().await?;
    let login_cookie = first_cookie(&form, "huikan_login=").unwrap_or_default();
    let page = form.text().await?;
    let token = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    let answer = http
        .post(format!("{base}/console/login"))
        .header("cookie", login_cookie)
        .form(&[
            ("username", username),
            ("password", password),
            ("csrf", &token),
        ])
        .send()
        .await?;
    Ok((answer.status(), first_cookie(&answer, "huikan_session=")))
}

/// The `name=value` part of the answer's `Set-Cookie` whose name starts it.
fn first_cookie(answer: &Response, starting: &str) -> Option<String> {
    answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(starting))
        .map(str::to_owned)
}
