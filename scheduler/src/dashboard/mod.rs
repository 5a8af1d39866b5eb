//! The web dashboard and `/metrics`, served by the scheduler (`scheduler --dashboard ADDR`).
//!
//! Pages are static HTML/JS/CSS compiled into the binary (no build step, no CDN); they get
//! their data from JSON endpoints and one server-sent-event stream (`/api/events`, a status
//! every second with the task-stream bars new since the last). Everything is aggregated by the
//! scheduler's event loop ([`crate::monitor::Monitor`]): never a row per task.
//!
//! Access: on a loopback address everything is open to this machine's users. On any other
//! address every path (JSON and `/metrics` included) needs the cluster token, as
//! `Authorization: Bearer TOKEN` or the cookie the login page (`/login`) sets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use tokio::sync::{mpsc, oneshot};

/// The default address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8787";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const LOGIN_HTML: &str = include_str!("assets/login.html");

/// The cookie the login page sets.
const COOKIE: &str = "drover_token";

/// What a page asks the scheduler's event loop.
#[derive(Debug)]
pub enum Ask {
    /// The cluster status, JSON.
    Status,
    /// The status and the task-stream bars that ended after `since_ms` (JSON
    /// `{"status": ..., "bars": [...]}`), at most a few thousand.
    Update {
        /// Bars that ended after this, ms since the Unix epoch (0: the last two minutes).
        since_ms: f64,
    },
    /// The Prometheus text exposition.
    Metrics,
    /// A detached run's report (its events), JSON; `None` for an unknown id.
    Report {
        /// The run's id.
        id: String,
    },
    /// Durable namespaces with their counts, JSON.
    Progress,
    /// A live run's graph with its pools and task states, SVG; `None` for an unknown run.
    Picture {
        /// A detached run's id or `CLIENT.RUN`.
        id: String,
    },
}

/// An ask and where its answer goes (`None`: not found).
pub type Asking = (Ask, oneshot::Sender<Option<String>>);

#[derive(Clone)]
struct Shared {
    ask: mpsc::UnboundedSender<Asking>,
    token: Arc<str>,
    open: bool,
}

impl Shared {
    async fn ask(&self, ask: Ask) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        self.ask.send((ask, tx)).ok()?;
        rx.await.ok().flatten()
    }
}

/// Parses `--dashboard`: an address, or `off`.
pub fn parse_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| format!("--dashboard {text:?}: not HOST:PORT or \"off\": {e}"))
}

/// Binds the dashboard's address. A taken default address falls back to a free port (logged);
/// a taken address the user named is an error.
pub async fn bind(addr: SocketAddr, named: bool) -> Result<tokio::net::TcpListener, String> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if !named => {
            let fallback = SocketAddr::new(addr.ip(), 0);
            tracing::info!(%addr, error = %e, "the dashboard's default address is taken; using a free port");
            tokio::net::TcpListener::bind(fallback)
                .await
                .map_err(|e| format!("dashboard: cannot bind {fallback}: {e}"))
        }
        Err(e) => Err(format!("--dashboard: cannot bind {addr}: {e}")),
    }
}

/// Serves the dashboard on `listener` until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: Arc<str>,
    ask: mpsc::UnboundedSender<Asking>,
) {
    let open = listener
        .local_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    let shared = Shared { ask, token, open };
    let guarded = Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/progress", get(progress))
        .route("/api/runs/{id}/report", get(report))
        .route("/api/runs/{id}/graph.svg", get(picture))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), gate));
    let app = Router::new()
        .route("/login", get(login_page))
        .route("/login", post(login))
        .merge(guarded)
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the dashboard stopped");
    }
}

/// Whether `given` is the token (in time independent of where they differ).
fn same_token(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The token a request carries, if any: a bearer header or the login cookie.
fn carried(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_owned());
        }
    }
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE).then(|| value.to_owned())
    })
}

/// Lets a request through when the dashboard is open or it carries the token; otherwise the
/// login page for a page, 401 for anything else.
async fn gate(State(s): State<Shared>, request: Request, next: Next) -> Response {
    if s.open || carried(request.headers()).is_some_and(|t| same_token(&t, &s.token)) {
        return next.run(request).await;
    }
    if request.uri().path() == "/" {
        return Redirect::to("/login").into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "the cluster token is needed (Authorization: Bearer TOKEN, or log in at /login)\n",
    )
        .into_response()
}

async fn login_page() -> Html<&'static str> {
    Html(LOGIN_HTML)
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(s): State<Shared>, Form(form): Form<LoginForm>) -> Response {
    if !same_token(form.token.trim(), &s.token) {
        return (
            StatusCode::UNAUTHORIZED,
            Html(LOGIN_HTML.replace("<!--error-->", "<p class=\"error\">Wrong token.</p>")),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        form.token.trim()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

fn json(body: Option<String>) -> Response {
    match body {
        Some(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn status(State(s): State<Shared>) -> Response {
    json(s.ask(Ask::Status).await)
}

async fn progress(State(s): State<Shared>) -> Response {
    json(s.ask(Ask::Progress).await)
}

async fn report(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.ask(Ask::Report { id: id.clone() }).await {
        Some(body) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"report-{id}.json\""),
                ),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no detached run {id:?}\n")).into_response(),
    }
}

async fn picture(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.ask(Ask::Picture { id: id.clone() }).await {
        Some(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no live run {id:?}\n")).into_response(),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    match s.ask(Ask::Metrics).await {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler is stopping\n",
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct Since {
    #[serde(default)]
    since: f64,
}

/// A status every second, with the bars new since the last.
async fn events(State(s): State<Shared>, Query(q): Query<Since>) -> impl IntoResponse {
    let stream = futures_util::stream::unfold((s, q.since, true), |(s, since, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let body = s.ask(Ask::Update { since_ms: since }).await?;
        // The newest bar's end, so the next update sends only what is new.
        let next = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["latest_ms"].as_f64())
            .unwrap_or(since);
        let event = SseEvent::default().event("update").data(body);
        Some((Ok::<_, std::convert::Infallible>(event), (s, next, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
