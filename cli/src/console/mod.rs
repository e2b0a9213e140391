//! `covenant console`: a read-only console in the browser, served on the
//! person's own machine. It calls the server over mutual TLS as the
//! identity in `--identity` (one gRPC channel, opened at start), so no
//! browser holds a client certificate and the server gains no port; it
//! shows exactly what that identity may see.
//!
//! The HTTP side is deliberately narrow: it binds to loopback unless told
//! otherwise, answers only GET and HEAD, refuses any request whose `Host`
//! is not its own listen address or whose `Origin` is another site's (a
//! page elsewhere cannot reach it through DNS rebinding or a cross-site
//! form), and sends a strict content security policy with every answer.
//! The pages themselves (askama templates in `cli/templates/console/`, no
//! JavaScript) are built in `pages.rs`; this file never renders data.

mod pages;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use covenant_proto::v1::query_service_client::QueryServiceClient;
use tonic::transport::Channel;

use crate::connect::Connection;
use pages::{FleetQuery, Frame, Page};

/// The address `covenant console` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The security headers every answer carries: no script, no frame, no
/// referrer, no sniffing, no cache (pages show what one identity may see).
const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'; \
         base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
];

/// What every request handler shares: the server's clients (cloned per
/// request over the one channel) and who the console runs as.
struct Console {
    channel: Channel,
    /// The connection itself, for what opens its own channel (an export).
    conn: Connection,
    frame: Frame,
    root: PathBuf,
    /// The `Host` values this console answers to.
    hosts: Vec<String>,
}

impl Console {
    fn query(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::new(self.channel.clone())
    }
}

/// `covenant console --listen ADDR`: binds (loopback unless told
/// otherwise), prints the URL to open, and serves until Ctrl-C.
pub async fn run(conn: &Connection, listen: SocketAddr, allow_remote: bool) -> anyhow::Result<()> {
    // Off loopback the Host check protects nothing (anyone can send the
    // listen address as the Host) and the pages travel as plain HTTP: only
    // when the person says so.
    if !listen.ip().to_canonical().is_loopback() && !allow_remote {
        bail!(
            "{listen} is not a loopback address: anyone who can reach it would read the ledger as this identity, \
             over plain HTTP. Listen on 127.0.0.1 or [::1], or pass --allow-remote if that is what you want"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr()?;
    if !bound.ip().to_canonical().is_loopback() {
        eprintln!(
            "warning: the console listens on {bound}, not on loopback: anyone who can reach this address reads the \
             ledger as this identity ({})",
            conn.identity_dir()?.display()
        );
    }
    serve(listener, conn, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// Serves the console on `listener` as `conn`'s identity until `shutdown`
/// completes. Opens the gRPC channel first (failing if the server cannot
/// be reached now), then prints the URL to open.
pub async fn serve(
    listener: tokio::net::TcpListener,
    conn: &Connection,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bound = listener.local_addr()?;
    let dir = conn.identity_dir()?.to_path_buf();
    let frame = Frame::of(&dir, conn.server.as_deref().unwrap_or_default())?;
    let channel = conn.channel().await?;
    let console = Arc::new(Console {
        channel,
        conn: conn.clone(),
        frame,
        root: dir.join("root.json"),
        hosts: allowed_hosts(bound),
    });
    let app = Router::new()
        .route("/", get(fleet))
        .route("/deployments/{id}", get(deployment))
        .route("/proposals", get(proposals))
        .route("/cases", get(cases))
        .route("/releases", get(releases))
        .route("/ledger", get(ledger))
        .route("/evidence", get(evidence))
        .route("/style.css", get(style))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console);
    println!("The console runs at http://{bound}/ (Ctrl-C stops it).");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("serving the console")
}

/// The `Host` values a request may carry: the listen address as bound,
/// and `localhost:PORT` when it is loopback.
fn allowed_hosts(bound: SocketAddr) -> Vec<String> {
    let mut hosts = vec![bound.to_string()];
    if bound.ip().to_canonical().is_loopback() {
        hosts.push(format!("localhost:{}", bound.port()));
    }
    hosts
}

/// Why a request is refused before any page is built, or `None`.
fn refusal(
    hosts: &[String],
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Option<(StatusCode, String)> {
    // Exactly one Host, and an absolute-form target (`GET http://a/ ...`)
    // naming the same authority: what the check reads is what is served.
    let mut all = headers.get_all(header::HOST).iter();
    let host = match (all.next(), all.next()) {
        (Some(h), None) => h.to_str().ok(),
        _ => None,
    };
    let host = host.filter(|h| uri.authority().is_none_or(|a| a.as_str() == *h));
    let Some(host) = host.filter(|h| hosts.iter().any(|allowed| allowed == h)) else {
        // A page on another site that resolves its own name to this address
        // (DNS rebinding) sends its own name as the Host: refused.
        return Some((
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "This console answers only requests addressed to {}; this one was addressed to {:?}. Open the \
                 console at http://{}/.",
                hosts.join(" or "),
                host.unwrap_or("nothing or several"),
                hosts.first().map_or("", String::as_str)
            ),
        ));
    };
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let foreign_origin = match (origins.next(), origins.next()) {
        (None, _) => false,
        (Some(origin), None) => origin.to_str().ok() != Some(format!("http://{host}").as_str()),
        (Some(_), Some(_)) => true,
    };
    // A request another site's page started (an image, a link, a form)
    // carries no Origin on a GET, but browsers say where it came from:
    // only the console's own pages and what the person typed are served.
    let cross_site =
        headers.get("sec-fetch-site").is_some_and(|v| !matches!(v.to_str().ok(), Some("same-origin" | "none")));
    if foreign_origin || cross_site {
        return Some((
            StatusCode::FORBIDDEN,
            "This console refuses requests sent by another site's page (the Origin is not the console's own)."
                .to_owned(),
        ));
    }
    if method != Method::GET && method != Method::HEAD {
        return Some((
            StatusCode::METHOD_NOT_ALLOWED,
            "The console is read-only: it answers GET and HEAD only. Each page shows the covenant command that acts."
                .to_owned(),
        ));
    }
    None
}

/// Refuses foreign hosts, foreign origins and methods other than GET and
/// HEAD, and sets the security headers on every answer.
async fn guard(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let mut response = match refusal(&console.hosts, request.method(), request.uri(), request.headers()) {
        Some((status, why)) => {
            let mut r = (status, why).into_response();
            if status == StatusCode::METHOD_NOT_ALLOWED {
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            r
        }
        None => next.run(request).await,
    };
    for (name, value) in SECURITY_HEADERS {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    // The evidence report is one self-contained page with its styles
    // inline (so that it works from a USB stick): it may use those, and
    // still nothing else.
    if response.headers_mut().remove(REPORT_MARK).is_some() {
        response.headers_mut().insert("content-security-policy", HeaderValue::from_static(REPORT_POLICY));
    }
    response
}

/// The header a handler sets on the evidence report (removed before it is sent).
const REPORT_MARK: header::HeaderName = header::HeaderName::from_static("x-covenant-self-contained");
/// The evidence report's content security policy: inline styles, nothing else.
const REPORT_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'";

/// An HTML answer, or a plain 500 if a template failed to render.
fn html(page: Page) -> Response {
    match page.body {
        Ok(body) => (page.status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the page could not be rendered: {e}")).into_response(),
    }
}

async fn fleet(State(c): State<Arc<Console>>, Query(q): Query<FleetQuery>) -> Response {
    html(pages::fleet(&c.frame, &mut c.query(), q).await)
}

async fn deployment(State(c): State<Arc<Console>>, Path(id): Path<String>) -> Response {
    html(pages::deployment(&c.frame, &mut c.query(), &id).await)
}

async fn proposals(State(c): State<Arc<Console>>) -> Response {
    html(pages::proposals(&c.frame, &mut c.query()).await)
}

async fn cases(State(c): State<Arc<Console>>) -> Response {
    html(pages::cases(&c.frame, &mut c.query()).await)
}

async fn releases(State(c): State<Arc<Console>>) -> Response {
    html(pages::releases(&c.frame, &mut c.query()).await)
}

async fn ledger(State(c): State<Arc<Console>>) -> Response {
    html(pages::ledger(&c.frame, c.channel.clone(), &c.root).await)
}

async fn evidence(State(c): State<Arc<Console>>, Query(q): Query<pages::EvidenceQuery>) -> Response {
    match pages::evidence(&c.frame, &c.conn, &c.root, q).await {
        Ok(report) => {
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (REPORT_MARK, "1")], report).into_response()
        }
        Err(page) => html(page),
    }
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], pages::STYLE).into_response()
}

async fn not_found(State(c): State<Arc<Console>>) -> Response {
    html(pages::not_found(&c.frame))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_its_own_host_and_origin_and_only_reads_are_answered() {
        let hosts = allowed_hosts("127.0.0.1:8080".parse().unwrap());
        let path: axum::http::Uri = "/".parse().unwrap();
        let ok = |m: &Method, h: &[(&'static str, &'static str)]| refusal(&hosts, m, &path, &headers(h)).map(|r| r.0);
        assert_eq!(ok(&Method::GET, &[("host", "127.0.0.1:8080")]), None);
        assert_eq!(ok(&Method::HEAD, &[("host", "localhost:8080")]), None);
        assert_eq!(ok(&Method::GET, &[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]), None);
        assert_eq!(ok(&Method::GET, &[("host", "evil.example:8080")]), Some(StatusCode::MISDIRECTED_REQUEST));
        assert_eq!(ok(&Method::GET, &[("host", "127.0.0.1:8081")]), Some(StatusCode::MISDIRECTED_REQUEST));
        assert_eq!(ok(&Method::GET, &[]), Some(StatusCode::MISDIRECTED_REQUEST));
        assert_eq!(
            ok(&Method::GET, &[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(ok(&Method::GET, &[("host", "127.0.0.1:8080"), ("origin", "null")]), Some(StatusCode::FORBIDDEN));
        assert_eq!(ok(&Method::POST, &[("host", "127.0.0.1:8080")]), Some(StatusCode::METHOD_NOT_ALLOWED));
        // A second Host or Origin, an absolute-form target naming another
        // authority, a request another site's page started: refused.
        let two_hosts = [("host", "127.0.0.1:8080"), ("host", "evil.example")];
        assert_eq!(ok(&Method::GET, &two_hosts), Some(StatusCode::MISDIRECTED_REQUEST));
        let two_origins = [("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080"), ("origin", "http://x")];
        assert_eq!(ok(&Method::GET, &two_origins), Some(StatusCode::FORBIDDEN));
        let absolute: axum::http::Uri = "http://evil.example/".parse().unwrap();
        let got = refusal(&hosts, &Method::GET, &absolute, &headers(&[("host", "127.0.0.1:8080")])).map(|r| r.0);
        assert_eq!(got, Some(StatusCode::MISDIRECTED_REQUEST));
        for site in ["cross-site", "same-site"] {
            let h = [("host", "127.0.0.1:8080"), ("sec-fetch-site", site)];
            assert_eq!(ok(&Method::GET, &h), Some(StatusCode::FORBIDDEN), "{site}");
        }
        for site in ["same-origin", "none"] {
            assert_eq!(ok(&Method::GET, &[("host", "127.0.0.1:8080"), ("sec-fetch-site", site)]), None, "{site}");
        }
        // Bound elsewhere than loopback, `localhost` is not this console.
        let wide = allowed_hosts("192.0.2.1:8080".parse().unwrap());
        assert_eq!(wide, ["192.0.2.1:8080"]);
    }
}
