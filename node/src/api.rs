//! The local HTTP API: publish, list, show and status, as JSON. It listens on
//! loopback, and every request must carry the token that `herald run` writes
//! to `api.token` in the node directory (readable by its owner only): other
//! users of the machine can neither publish in the member's name nor read
//! what it holds. The web page (`web.rs`) is served beside it without the
//! token and reads through it with the token.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use herald_protocol::{BulletinId, MemberId, Severity, Timestamp, Tlp};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::node::{Draft, Node, PublishError};
use crate::store::{IdLookupError, Query};
use crate::view::{BulletinView, StatusView};

/// Largest request body accepted: a largest registry update as hex JSON
/// (`POST /v1/registry`), with room; a largest draft is well within it.
const MAX_REQUEST_BYTES: usize = 2 * herald_protocol::MAX_REGISTRY_UPDATE_BYTES + 64 * 1024;

/// The file in the node directory that holds the API token.
pub const TOKEN_FILE: &str = "api.token";
/// The file in the node directory that holds the token for `GET /metrics`
/// only: a scraper need not run as the node's user, and the token lets it
/// publish nothing.
pub const METRICS_TOKEN_FILE: &str = "metrics.token";

/// Makes a new API token and writes it to [`TOKEN_FILE`] in `dir`, readable
/// and writable by the owner only. A new token each run: one left by an old
/// run is useless.
pub fn write_token(dir: &std::path::Path) -> std::io::Result<String> {
    // A file made by an older Herald may have wider permissions: narrow them.
    write_token_file(&dir.join(TOKEN_FILE), 0o600, true)
}

/// Makes a new token for `GET /metrics` and writes it to
/// [`METRICS_TOKEN_FILE`] in `dir` (a new one each run). A new file is
/// readable by the node's user and group (0640); an existing one keeps the
/// mode and group the operator gave it (to let a scraper's group read it).
pub fn write_metrics_token(dir: &std::path::Path) -> std::io::Result<String> {
    write_token_file(&dir.join(METRICS_TOKEN_FILE), 0o640, false)
}

/// A new random API token (64 hexadecimal digits).
pub fn new_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_token_file(path: &std::path::Path, mode: u32, force_mode: bool) -> std::io::Result<String> {
    let token = new_token();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    if force_mode {
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (mode, force_mode);
    std::io::Write::write_all(&mut file, token.as_bytes())?;
    file.sync_all()?;
    Ok(token)
}

/// The API token a running node wrote to `dir`, if there is one.
pub fn read_token(dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(dir.join(TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_string())
}

/// The tokens a group of routes accepts, and the refusal's text.
#[derive(Clone)]
struct Accepted {
    tokens: Arc<[String]>,
    refusal: &'static str,
}

/// Refuses any request without `Authorization: Bearer <token>` for one of the
/// accepted tokens.
async fn require_token(
    State(accepted): State<Accepted>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Every token is compared, so that the time taken does not say which matched.
    let matched = given.is_some_and(|given| {
        accepted
            .tokens
            .iter()
            .fold(false, |any, token| same(given.as_bytes(), token.as_bytes()) | any)
    });
    if matched {
        next.run(request).await
    } else {
        Failure(StatusCode::UNAUTHORIZED, accepted.refusal.to_string()).into_response()
    }
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error as the API returns it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong and what to do.
    pub error: String,
}

pub(crate) struct Failure(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

/// A JSON request body; one that cannot be read or is not what the endpoint
/// takes is answered with an [`ApiError`], as every other refusal is.
struct Body<T>(T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    Json<T>: axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Failure> {
        // What the limit is for, to say so when a body is over it.
        let largest = match request.uri().path() {
            "/v1/registry" => format!(
                "a signed registry update is at most {} bytes",
                herald_protocol::MAX_REGISTRY_UPDATE_BYTES
            ),
            _ => format!(
                "a bulletin holds at most {} bytes in all",
                herald_protocol::MAX_BULLETIN_BYTES
            ),
        };
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request is over the API's limit of {MAX_REQUEST_BYTES} bytes ({largest}); shorten it"
                ),
            )),
            Err(rejection) => Err(Failure(
                rejection.status(),
                format!(
                    "the request body is not what this endpoint takes: {}",
                    rejection.body_text()
                ),
            )),
        }
    }
}

/// A request's query parameters; ones that do not parse are answered with an
/// [`ApiError`].
pub(crate) struct Params<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequestParts<S> for Params<T>
where
    QueryParams<T>: axum::extract::FromRequestParts<S, Rejection = axum::extract::rejection::QueryRejection>,
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Failure> {
        match QueryParams::<T>::from_request_parts(parts, state).await {
            Ok(QueryParams(value)) => Ok(Params(value)),
            Err(rejection) => Err(Failure(
                rejection.status(),
                format!("the query parameters do not parse: {}", rejection.body_text()),
            )),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Runs `work` (store reads that may wait on a lock or sled) on the blocking
/// pool, off the async workers; its error is an internal one.
pub(crate) async fn off_workers<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// The reply to a publication.
#[derive(Debug, Serialize, Deserialize)]
pub struct Published {
    /// The new bulletin's id.
    pub id: BulletinId,
    /// Its number in the signing key's chain.
    pub seq: u64,
}

/// Options of `POST /v1/bulletins`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PublishParams {
    /// The operator's word that the store holds the signing key's whole chain
    /// (none, for a key that never published), so that the node numbers on
    /// without checking with its peers first ([`Node::publish_new_chain`]).
    #[serde(default)]
    pub new_chain: bool,
}

/// Filters of `GET /v1/bulletins`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ListParams {
    /// Kind name.
    pub kind: Option<String>,
    /// Member id (hex).
    pub member: Option<MemberId>,
    /// TLP label.
    pub tlp: Option<Tlp>,
    /// Minimum severity.
    pub min_severity: Option<Severity>,
    /// Created at or after (ms since the epoch).
    pub since: Option<u64>,
    /// Created before (ms since the epoch).
    pub until: Option<u64>,
    /// Arrived at this node at or after (ms since the epoch, its clock),
    /// whenever made; the latest arrivals first.
    pub arrived_since: Option<u64>,
    /// Most results.
    pub limit: Option<usize>,
    /// Text the title, references or content must hold, letter case aside.
    pub text: Option<String>,
}

/// How long a connection to the API may take nothing the node writes before
/// the node drops it: a client that stopped reading (a `herald watch` paused
/// or piped into a pager) must not hold up the node's stop, which waits for
/// every answer to finish.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// How long after the API begins to stop a connection may still wait for its
/// client (to send a request, or the rest of one, or to take an answer)
/// before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a client may take to send a request's line and headers, counted
/// from when the connection opens or its previous answer ends (so it is also
/// how long a kept-alive connection may sit idle between requests). A client
/// that has not sent them by then is dropped: connections that drip a header
/// would otherwise stay open for ever.
const HEADER_READ: Duration = Duration::from_secs(10);

/// The most a request's line and headers may take (the token and the
/// headers of a browser fit many times over); a longer one is answered 431.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The most a connection buffers of what its client sends (headers must fit
/// in it; a body streams through it).
const MAX_READ_BUFFER: usize = 64 * 1024;

/// The most connections the API serves at once. One more is closed as it is
/// accepted, until one ends; the local API's clients (the command line, the
/// web page, a scraper, up to 64 live feeds) need far fewer.
const MAX_CONNECTIONS: usize = 256;

/// What the API allows each connection, and how many at once.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// [`HEADER_READ`].
    header_read: Duration,
    /// [`MAX_CONNECTIONS`].
    connections: usize,
}

impl Limits {
    const API: Limits = Limits {
        header_read: HEADER_READ,
        connections: MAX_CONNECTIONS,
    };
}

/// Takes the next connection from `listener`.
async fn accept(listener: &tokio::net::TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            // A connection reset before it was taken: the next one.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => {}
            // Out of file descriptors, or worse: say so, and try again
            // after a pause, as axum's own listener does.
            Err(e) => {
                tracing::warn!(error = %e, "the local API cannot take connections");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes;
/// then sets `closing` (live feeds end), lets each connection finish the
/// answer it is writing (or drops it [`STOP_GRACE`] on if it still waits for
/// its client) and returns once every connection has ended.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    closing: tokio::sync::watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_READ_BUFFER);
    // Each connection holds a permit while it is open.
    let open = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    // Connections closed since the API reached its most, if it has.
    let mut refused: Option<u64> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            // Closed at once (dropped), without waiting for a place: the
            // loop goes on taking, and closing, what comes.
            drop(stream);
            if refused.is_none() {
                tracing::warn!(
                    %peer,
                    most = limits.connections,
                    "the local API has as many connections open as it serves; it closes new ones until some end"
                );
            }
            *refused.get_or_insert(0) += 1;
            continue;
        };
        if let Some(count) = refused.take() {
            tracing::info!(closed = count, "the local API takes connections again");
        }
        let mut stopping = closing.subscribe();
        let stop = async move {
            let _ = stopping.wait_for(|closing| *closing).await;
            tokio::time::sleep(STOP_GRACE).await;
        };
        let io = hyper_util::rt::TokioIo::new(Stalling::new(stream, WRITE_STALL, stop));
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(io, service);
        let mut stopping = closing.subscribe();
        tokio::spawn(async move {
            let _open = permit;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                // (The watch's guard is let go before the wait below.)
                _ = async { stopping.wait_for(|closing| *closing).await.map(|_| ()) } => {
                    // Ends once the answer being written is (at once if none).
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "an API connection ended");
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Every permit back: every connection has ended.
    let all = u32::try_from(limits.connections).unwrap_or(u32::MAX);
    let _ = open.acquire_many(all).await;
}

/// A connection whose writes fail with `TimedOut` once one has waited `limit`
/// for the peer to take something, and whose waits (reads and writes alike)
/// fail with `ConnectionAborted` once `stop` completes.
struct Stalling<S> {
    inner: S,
    limit: Duration,
    /// Since the current write began to wait.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<S> Stalling<S> {
    /// `inner`, whose writes may wait `limit` in a row, until `stop`.
    fn new(inner: S, limit: Duration, stop: impl Future<Output = ()> + Send + 'static) -> Self {
        Stalling {
            inner,
            limit,
            waiting: None,
            stop: Box::pin(stop),
        }
    }

    /// A read or write that could not go on: it waits, unless the stop came.
    fn stopped<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match self.stop.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the local API is stopping",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A write that could not go on: it waits, or fails once `limit` is up.
    fn write_waits<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took nothing for {limit:?}"),
            )));
        }
        self.stopped(cx)
    }

    /// What a write did: bytes taken end the wait.
    fn wrote(
        &mut self,
        result: Poll<std::io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        match result {
            Poll::Pending => self.write_waits(cx),
            Poll::Ready(Ok(n)) if n > 0 => {
                self.waiting = None;
                Poll::Ready(Ok(n))
            }
            ready => ready,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalling<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => self.stopped(cx),
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalling<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.write_waits(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.write_waits(cx),
            ready => ready,
        }
    }
}

/// Warns that the API at `addr` is reachable from beyond this machine: the
/// token (and whatever the API answers) then travels in plain HTTP. Not
/// refused: an operator may put the API behind a TLS proxy on another
/// machine.
fn warn_if_beyond_loopback(addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            listen = %addr,
            "the local API listens beyond loopback: its token and the bulletins it answers with travel in plain HTTP to whoever can reach it; keep [api] listen on 127.0.0.1, or reach it only through a TLS proxy"
        );
    }
}

/// Serves the API on `addr` until `shutdown` completes, to requests that
/// carry `token` (and `GET /metrics` to those that carry `metrics_token`
/// too). Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    token: String,
    metrics_token: Option<String>,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    warn_if_beyond_loopback(addr);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // Live feeds end as the server stops (its graceful stop waits for them).
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let bound = listener.local_addr()?;
    let api = Accepted {
        tokens: Arc::from([token.clone()]),
        refusal: "this API needs the token in api.token of the node directory; run the command as the user that runs the node, with its --dir",
    };
    let scrape = Accepted {
        tokens: Arc::from(std::iter::once(token).chain(metrics_token).collect::<Vec<_>>()),
        refusal: "metrics need the token in metrics.token (or api.token) of the node directory, sent as `Authorization: Bearer <token>`",
    };
    let metrics_routes = Router::new()
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(scrape, require_token));
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/bulletins", get(list).post(publish))
        .route("/v1/bulletins/{id}", get(show))
        .route("/v1/registry", get(registry_view).post(submit_registry))
        .route("/v1/import", axum::routing::post(import))
        .route("/v1/export", axum::routing::post(export))
        .route("/v1/watch", get(crate::watch::watch))
        .layer(axum::Extension(crate::watch::Closing(closing_rx)))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::from_fn_with_state(api, require_token))
        .merge(metrics_routes)
        // The web page holds no data: it is served without the token, and asks for it.
        .merge(crate::web::routes())
        .with_state(node);
    let task = tokio::spawn(serve_connections(listener, app, Limits::API, closing, shutdown));
    Ok((bound, task))
}

/// `POST /v1/registry`: an approved registry update, hex-encoded wire bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitRegistry {
    /// The signed update's wire bytes, in hex.
    pub update: String,
}

/// The answer to a registry submission.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegistrySubmitted {
    /// The registry version now held.
    pub version: u64,
}

async fn submit_registry(
    State(node): State<Arc<Node>>,
    Body(request): Body<SubmitRegistry>,
) -> Result<Json<RegistrySubmitted>, Failure> {
    let bytes = hex::decode(&request.update)
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, format!("update is not hex: {e}")))?;
    let update = herald_protocol::SignedRegistryUpdate::from_bytes(&bytes)
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, format!("not a registry update: {e}")))?;
    match node.submit_registry_update(update).await {
        Ok(version) => Ok(Json(RegistrySubmitted { version: version.0 })),
        Err(PublishError::Invalid(m)) => Err(Failure(StatusCode::BAD_REQUEST, m)),
        Err(e) => Err(internal(e)),
    }
}

async fn registry_view(State(node): State<Arc<Node>>) -> Json<crate::view::RegistryView> {
    let registry = node.registry();
    let registry = registry.read().unwrap_or_else(|e| e.into_inner());
    Json(crate::view::RegistryView::new(&registry))
}

/// `POST /v1/import`: a bundle file on this machine to import.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportRequest {
    /// Path of the bundle, readable by the node.
    pub path: std::path::PathBuf,
}

/// `POST /v1/export`: where to write a bundle, and what to put in it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportRequest {
    /// Path of the bundle to write.
    pub path: std::path::PathBuf,
    /// Which bulletins.
    #[serde(default)]
    pub filter: crate::bundle::ExportFilter,
    /// Replace a file already at `path` (refused, 409, if not).
    #[serde(default)]
    pub replace: bool,
}

async fn import(
    State(node): State<Arc<Node>>,
    Body(request): Body<ImportRequest>,
) -> Result<Json<crate::bundle::ImportReport>, Failure> {
    match node.import_bundle(request.path).await {
        Ok(report) => Ok(Json(report)),
        Err(
            e
            @ (crate::bundle::BundleError::Damaged { .. } | crate::bundle::BundleError::WrongNetwork { .. }),
        ) => Err(Failure(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => Err(internal(e)),
    }
}

async fn export(
    State(node): State<Arc<Node>>,
    Body(request): Body<ExportRequest>,
) -> Result<Json<crate::bundle::ExportReport>, Failure> {
    if let Some(kind) = &request.filter.kind {
        herald_protocol::Kind::check_name(kind).map_err(|e| Failure(StatusCode::BAD_REQUEST, e))?;
    }
    let replace = match request.replace {
        true => crate::bundle::Replace::Yes,
        false => crate::bundle::Replace::No,
    };
    node.export_bundle_to(request.path, replace, request.filter)
        .await
        .map(Json)
        .map_err(|e| match e {
            crate::bundle::BundleError::Exists(_) => Failure(StatusCode::CONFLICT, e.to_string()),
            e => internal(e),
        })
}

async fn status(State(node): State<Arc<Node>>) -> Result<Json<StatusView>, Failure> {
    let network_status = node.network_status().await;
    status_view(node, network_status).await.map(Json)
}

/// `GET /metrics`: the status and the node's event counts in the Prometheus
/// text format, for a scraper that sends the metrics token (`authorization:
/// credentials_file: <dir>/metrics.token`).
async fn metrics(State(node): State<Arc<Node>>) -> Result<Response, Failure> {
    // Once the network has stopped its figures are gone: zeros would read as
    // a reset of every counter.
    let network_status = node
        .try_network_status()
        .await
        .ok_or_else(|| Failure(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping".into()))?;
    let status = status_view(Arc::clone(&node), network_status).await?;
    let text = crate::metrics::render(&status, node.event_counts());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn status_view(
    node: Arc<Node>,
    network_status: crate::network::NetworkStatus,
) -> Result<StatusView, Failure> {
    let (registry_version, (registry_forks, registry_forks_settled), registry_switches) = {
        let lock = node.registry();
        let registry = lock.read().unwrap_or_else(|e| e.into_inner());
        (
            registry.version().0,
            crate::view::forked_versions(&registry),
            registry.switches(),
        )
    };
    Ok(StatusView {
        peer_id: node.peer_id().to_string(),
        member: node.member(),
        network: node.network().to_string(),
        registry_version,
        registry_forks,
        registry_forks_settled,
        registry_switches,
        // (It waits for a fold in progress, and reads sled: off the async
        // workers, as what follows.)
        bulletins: {
            let store = node.store().clone();
            off_workers(move || store.held_count()).await?
        },
        connected_peers: node
            .connected_peers()
            .await
            .iter()
            .map(|p| p.to_string())
            .collect(),
        listen: node.listen_addrs().await.iter().map(|a| a.to_string()).collect(),
        equivocations: {
            let store = node.store().clone();
            off_workers(move || store.evidence_held()).await?
        },
        pending_gossip: network_status.pending_gossip,
        syncing: network_status.syncing,
        last_sync: network_status.last_sync,
        behind: network_status.behind,
        tree: network_status.tree,
        // (It reads under the journal's lock, which a publication holds
        // across its disk write: off the async workers.)
        own_chain: {
            let node = Arc::clone(&node);
            off_workers(move || node.own_chain()).await?
        },
    })
}

async fn publish(
    State(node): State<Arc<Node>>,
    Params(params): Params<PublishParams>,
    Body(draft): Body<Draft>,
) -> Result<Response, Failure> {
    let published = if params.new_chain {
        node.publish_new_chain(draft).await
    } else {
        node.publish(draft).await
    };
    match published {
        Ok(b) => Ok((
            StatusCode::CREATED,
            Json(Published {
                id: b.id(),
                seq: b.body().seq.0,
            }),
        )
            .into_response()),
        Err(PublishError::Invalid(m)) => Err(Failure(StatusCode::BAD_REQUEST, m)),
        Err(
            e @ (PublishError::ChainUnchecked { .. }
            | PublishError::NoOneToAsk
            | PublishError::ChainBehind { .. }),
        ) => Err(Failure(StatusCode::CONFLICT, e.to_string())),
        Err(PublishError::Stopped) => Err(Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is stopping".into(),
        )),
        Err(e) => Err(internal(e)),
    }
}

pub(crate) fn member_name(node: &Node, member: Option<MemberId>) -> Option<(MemberId, String)> {
    let member = member?;
    let registry = node.registry();
    let registry = registry.read().unwrap_or_else(|e| e.into_inner());
    let name = registry.current().member(&member).map(|m| m.name.clone())?;
    Some((member, name))
}

/// A query of the filters the list and the watch share, checked.
pub(crate) fn query_of(
    kind: Option<String>,
    member: Option<MemberId>,
    tlp: Option<Tlp>,
    min_severity: Option<Severity>,
    text: Option<String>,
) -> Result<Query, Failure> {
    if let Some(kind) = &kind {
        herald_protocol::Kind::check_name(kind).map_err(|e| Failure(StatusCode::BAD_REQUEST, e))?;
    }
    let text = text.filter(|t| !t.is_empty());
    if text
        .as_ref()
        .is_some_and(|t| t.len() > crate::store::MAX_QUERY_TEXT_BYTES)
    {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!(
                "the text to look for is over {} bytes: shorten it",
                crate::store::MAX_QUERY_TEXT_BYTES
            ),
        ));
    }
    Ok(Query {
        kind,
        member,
        tlp,
        min_severity,
        text,
        ..Query::default()
    })
}

/// The most bulletins one answer to `GET /v1/bulletins` lists (each is
/// read into memory and answered at once): what is beyond is for `herald
/// export`, or `GET /v1/watch?since=`, which lists everything page by page.
pub const MAX_LIST: usize = 10_000;

async fn list(
    State(node): State<Arc<Node>>,
    Params(params): Params<ListParams>,
) -> Result<Response, Failure> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!(
                "limit {limit} is out of range: from 1 to {MAX_LIST}; for more, export them (herald export, POST /v1/export) or list them page by page (GET /v1/watch?since=)"
            ),
        ));
    }
    let query = Query {
        since: params.since.map(Timestamp),
        until: params.until.map(Timestamp),
        arrived_since: params.arrived_since.map(Timestamp),
        limit,
        ..query_of(
            params.kind,
            params.member,
            params.tlp,
            params.min_severity,
            params.text,
        )?
    };
    let store = node.store().clone();
    let (found, complete) = off_workers(move || store.search(&query, crate::store::TEXT_SCAN_LIMIT)).await?;
    let mut views = Vec::with_capacity(found.len());
    for b in &found {
        let member = node.store().signer_of(&b.id()).map_err(internal)?;
        views.push(BulletinView::new(b, member_name(&node, member), false));
    }
    let mut response = Json(views).into_response();
    if !complete {
        // A text search that stopped before the oldest bulletins.
        response
            .headers_mut()
            .insert(SEARCH_HEADER, axum::http::HeaderValue::from_static("incomplete"));
    }
    Ok(response)
}

/// The header of a `GET /v1/bulletins` answer whose text search stopped after
/// [`crate::store::TEXT_SCAN_LIMIT`] bulletins (value `incomplete`): older ones
/// were not searched.
pub const SEARCH_HEADER: &str = "herald-search";

async fn show(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Json<BulletinView>, Failure> {
    // The id, or the start of it (as `herald list` shows it).
    let id = node.store().resolve_id(&id).map_err(|e| {
        let code = match e {
            IdLookupError::NotHeld(_) => StatusCode::NOT_FOUND,
            IdLookupError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Failure(code, e.to_string())
    })?;
    let bulletin = node
        .store()
        .get(&id)
        .map_err(internal)?
        .ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("no bulletin {id} is held here")))?;
    let member = node.store().signer_of(&id).map_err(internal)?;
    let mut view = BulletinView::new(&bulletin, member_name(&node, member), true);
    // A scan of the time index after it: off the async workers.
    let store = node.store().clone();
    view.answers = Some(off_workers(move || store.answers_to(&bulletin)).await?);
    Ok(Json(view))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn never() -> std::future::Pending<()> {
        std::future::pending()
    }

    /// A small app served within `limits` on loopback: `GET /` answers `ok`,
    /// `GET /slow` streams ten lines 100 ms apart. Returns its address, the
    /// stop, and the server's task.
    async fn small_api(
        limits: Limits,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let slow = || async {
            let lines = futures::stream::unfold(0u8, |n| async move {
                if n == 10 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, std::io::Error>(format!("line {n}\n")), n + 1))
            });
            axum::body::Body::from_stream(lines)
        };
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/slow", get(slow));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (closing, _) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(serve_connections(listener, app, limits, closing, async {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    /// Reads until the server closes the connection (bounded); what it sent.
    async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
        let mut taken = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => taken.extend_from_slice(&buf[..n]),
                }
            }
        });
        read.await.expect("the server did not close the connection");
        String::from_utf8_lossy(&taken).into_owned()
    }

    /// Sends `GET path` on `stream`, kept alive, and reads the answer's head
    /// and `body_bytes` of body.
    async fn get_on(stream: &mut tokio::net::TcpStream, path: &str, body_bytes: usize) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut taken = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            loop {
                let text = String::from_utf8_lossy(&taken).into_owned();
                if let Some((_, body)) = text.split_once("\r\n\r\n")
                    && body.len() >= body_bytes
                {
                    return text;
                }
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before the answer: {text:?}");
                taken.extend_from_slice(&buf[..n]);
            }
        });
        read.await.expect("no answer in time")
    }

    #[test]
    fn an_api_beyond_loopback_is_warned_of() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Logged(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Logged {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logged_for = |addr: &str| {
            let logged = Logged::default();
            let writer = logged.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                warn_if_beyond_loopback(addr.parse().unwrap());
            });
            String::from_utf8(logged.0.lock().unwrap().clone()).unwrap()
        };
        for addr in ["0.0.0.0:7801", "[::]:7801", "192.0.2.1:7801"] {
            let logged = logged_for(addr);
            assert!(
                logged.contains("WARN") && logged.contains("beyond loopback"),
                "{addr}: {logged:?}"
            );
        }
        for addr in ["127.0.0.1:7801", "[::1]:7801"] {
            assert_eq!(logged_for(addr), "", "{addr}");
        }
    }

    #[tokio::test]
    async fn a_client_that_does_not_finish_its_headers_is_dropped() {
        let header_read = Duration::from_millis(300);
        let (addr, stop, task) = small_api(Limits {
            header_read,
            connections: 8,
        })
        .await;
        // Headers dripped and never finished.
        let began = std::time::Instant::now();
        let mut dripping = tokio::net::TcpStream::connect(addr).await.unwrap();
        dripping
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Drip: aaaa")
            .await
            .unwrap();
        read_to_close(&mut dripping).await;
        assert!(began.elapsed() >= header_read, "closed before its time");
        // A connection kept alive after an answer is dropped when idle as long.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(get_on(&mut idle, "/", 2).await.ends_with("\r\n\r\nok"));
        read_to_close(&mut idle).await;
        // An answer that takes longer to stream than the limit is not cut.
        let mut feed = tokio::net::TcpStream::connect(addr).await.unwrap();
        feed.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let streamed = read_to_close(&mut feed).await;
        assert!(
            streamed.contains("line 0\n") && streamed.contains("line 9\n"),
            "{streamed:?}"
        );
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn connections_past_the_most_are_closed_at_once_and_the_rest_served() {
        let (addr, stop, task) = small_api(Limits {
            header_read: Duration::from_secs(3600),
            connections: 2,
        })
        .await;
        // Two open, idle: the API's most. (The server takes connections in
        // the order they came.)
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_to_close(&mut third).await, "", "the third was served");
        // The two served go on being served.
        assert!(get_on(&mut first, "/", 2).await.ends_with("\r\n\r\nok"));
        assert!(get_on(&mut second, "/", 2).await.ends_with("\r\n\r\nok"));
        // Once one ends, a new one is served (after the server has seen it end).
        drop(first);
        let served = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
                let asked = next
                    .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .await;
                if asked.is_ok() && read_to_close(&mut next).await.ends_with("\r\n\r\nok") {
                    return;
                }
            }
        });
        served.await.expect("no connection was served after one ended");
        // The stop closes the idle connection still open, and ends.
        stop.send(()).unwrap();
        read_to_close(&mut second).await;
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_does_not_take_fails_once_the_limit_is_up() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut stalling = Stalling::new(near, Duration::from_millis(100), never());
        stalling.write_all(&[1; 64]).await.unwrap();
        let stuck = tokio::time::timeout(Duration::from_secs(10), stalling.write_all(&[2; 64]))
            .await
            .unwrap();
        assert_eq!(stuck.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        // A client that reads again lets writes go on.
        let mut taken = [0; 64];
        far.read_exact(&mut taken).await.unwrap();
        assert_eq!(taken, [1; 64]);
        stalling.write_all(&[3; 64]).await.unwrap();
        far.read_exact(&mut taken).await.unwrap();
        assert_eq!(taken, [3; 64]);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_shorter_than_the_limit_each_do_not_add_up() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut stalling = Stalling::new(near, Duration::from_millis(100), never());
        stalling.write_all(&[1; 64]).await.unwrap();
        let mut taken = [0; 64];
        // Two waits of 60 ms, each ended by the client taking what was written.
        for n in 2..4u8 {
            let bytes = [n; 64];
            let write = stalling.write_all(&bytes);
            let read = async {
                tokio::time::sleep(Duration::from_millis(60)).await;
                far.read_exact(&mut taken).await.unwrap();
            };
            let (written, ()) = tokio::join!(write, read);
            written.unwrap();
            assert_eq!(taken, [n - 1; 64]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_waiting_for_its_client_ends_when_the_api_stops() {
        let (near, _far) = tokio::io::duplex(64);
        let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
        let mut stalling = Stalling::new(near, Duration::from_secs(3600), async move {
            let _ = stopping.await;
        });
        let mut buf = [0; 8];
        let read = tokio::spawn(async move { stalling.read(&mut buf).await });
        tokio::task::yield_now().await;
        stop.send(()).unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.unwrap_err().kind(), std::io::ErrorKind::ConnectionAborted);
    }
}
