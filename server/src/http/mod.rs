//! The HTTP layer: shared state, the router assembled from each capability's routes, and the
//! middleware every request passes (tracing, metrics, panics as problem+json).

pub mod json;
pub mod page;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::db::Db;
use crate::error::{AppError, Problem, problem_response};
use crate::store::BlobStore;
use crate::store::spool::SpoolDir;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub store: Arc<dyn BlobStore>,
    pub spool: SpoolDir,
    pub submissions: crate::submissions::GroupCommit,
    pub signer: Arc<crate::audit::signing::Signer>,
    pub jobs: crate::jobs::Wakeup,
    pub metrics: PrometheusHandle,
    pub near: Arc<crate::evidence::index::NearIndex>,
    pub login_throttle: Arc<crate::auth::LoginThrottle>,
    /// Basic credentials verified lately (OpenRosa clients send them with every request).
    pub basic_credentials: Arc<crate::openrosa::BasicCache>,
}

pub fn router(state: AppState) -> Router {
    let json_limit = state.config.max_json_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.yaml", get(openapi))
        .merge(crate::audit::router())
        .merge(crate::auth::router())
        .merge(crate::blobs::router())
        .merge(crate::evidence::lookup::router())
        .merge(crate::uploads::router())
        .merge(crate::campaigns::router())
        .merge(crate::submissions::router())
        .merge(crate::openrosa::router())
        .merge(crate::registry::router())
        .merge(crate::reconcile::report::router())
        .merge(crate::review::router())
        .merge(crate::console::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(middleware::from_fn(record_metrics))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            problem_response(&Problem::new(
                "internal",
                "the server failed; the request may be retried",
            ))
        }))
        .with_state(state)
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` until `shutdown`, then waits for the connections'
/// requests in flight to finish. Hand-built on hyper-util rather than `axum::serve` for one
/// setting: a per-connection read buffer of 64 KiB instead of hyper's ~400 KiB, which with
/// many phones uploading at once is most of the server's memory.
pub async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(64 * 1024);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait a moment rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(PeerAddress(peer.ip()));
                request
            },
        ));
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The address a request's connection comes from (throttling counts failures per address).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddress(pub std::net::IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // Every connection is served by `serve_connections`, which sets it; a request built
        // without one (in-process) counts as from the unspecified address.
        Ok(parts
            .extensions
            .get::<PeerAddress>()
            .copied()
            .unwrap_or(PeerAddress(std::net::Ipv4Addr::UNSPECIFIED.into())))
    }
}

/// The process-wide Prometheus recorder (a process has one global recorder).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // Fails only if another recorder was installed first; ours then stays empty.
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed());
    metrics::counter!("http_requests_total", &labels).increment(1);
    response
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Result<Response, AppError> {
    let timeout = Duration::from_secs(5);
    let db = tokio::time::timeout(timeout, state.db.ping()).await;
    let store = tokio::time::timeout(timeout, state.store.health()).await;
    let failing: Vec<String> = [
        (
            "database",
            db.map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string())),
        ),
        (
            "blob_store",
            store
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string())),
        ),
    ]
    .into_iter()
    .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
    .collect();
    if failing.is_empty() {
        Ok(axum::Json(serde_json::json!({"database": "ok", "blob_store": "ok"})).into_response())
    } else {
        tracing::warn!(?failing, "not ready");
        Err(AppError::problem("not_ready", failing.join("; ")))
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // How far behind the database this process's near-duplicate index may be, at most (-1 until
    // it is loaded).
    let lag = state.near.lag().map_or(-1.0, |lag| lag.as_secs_f64());
    metrics::gauge!("near_index_lag_seconds").set(lag);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        include_str!("../../../openapi.yaml"),
    )
}

async fn no_route(request: Request) -> AppError {
    AppError::problem(
        "no_route",
        format!("there is no endpoint {}", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> Response {
    let problem = Problem::new(
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    );
    let mut response = problem_response(&problem);
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}
