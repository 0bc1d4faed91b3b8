//! `nexus serve`: the sync server between stores that cannot reach
//! PostgreSQL (browsers, apps) and the database.
//!
//! Endpoints (protocol of [`nexus_sync::protocol`], README "The sync
//! server"): health, a source's state, push (a change file, applied
//! exactly once per source with the conflict rule, in one transaction;
//! one too large for a request comes in parts, staged until the last),
//! pull (the caller's tenant's change feed after a position, paged) and
//! snapshot (every row of the caller's tenant, paged by key, for a first
//! pull).
//! Every request but health carries a bearer token that names one tenant
//! ([`auth`]); rows of another tenant are refused (403), nothing applied.
//! Bodies are bounded (413), requests time out (408), applies are bounded
//! per tenant, CORS is configurable, one log line per request (tracing),
//! and shutdown finishes the requests in flight.

#![warn(missing_docs)]

pub mod auth;
mod error;
mod own;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nexus_core::ChangeFile;
use nexus_postgres::{PgUrl, Pool, PoolOptions};
use nexus_sync::protocol::{
    self, HEALTH, PROTOCOL_HEADER, PROTOCOL_VERSION, PULL, PUSH, PUSH_PART, Pulled, Pushed,
    QUERY_HEADER, QUERY_IN_HEADER, SNAPSHOT, STATE, Snapshotted, Staged,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use auth::{Auth, AuthSettings, token_hash};
pub use error::ApiError;

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The database.
    pub db: PgUrl,
    /// Where to listen (`127.0.0.1:8080`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Bodies larger than this are refused with 413 (default 64 MiB).
    pub max_body_bytes: usize,
    /// A push sent in parts ([`PUSH_PART`]: one local transaction larger
    /// than a body) larger than this in all is refused with 413 (default
    /// 1 GiB): the server holds it whole while it applies it.
    pub max_push_bytes: u64,
    /// A request that takes longer is answered 408 (default 60 s).
    pub request_timeout: Duration,
    /// Pushes applied at once per tenant (default 2); more wait their turn.
    pub max_applies_per_tenant: usize,
    /// Pushes (and parts of pushes) applied at once over all tenants
    /// (default 8); more wait their turn. A push is held whole in memory
    /// while it applies: this and the body limits bound the server's memory.
    pub max_applies: usize,
    /// Rows of a pull page at most (default 10,000); clients ask for fewer.
    pub max_page_rows: usize,
    /// Origins whose pages may call the server (`*`: any); none: no CORS.
    pub cors_origins: Vec<String>,
    /// Connections to the database at most (default 16).
    pub pool_size: usize,
}

impl Config {
    /// The defaults, for `db` on `listen`.
    pub fn new(db: PgUrl, listen: SocketAddr) -> Config {
        Config {
            db,
            listen,
            max_body_bytes: 64 << 20,
            max_push_bytes: 1 << 30,
            request_timeout: Duration::from_secs(60),
            max_applies_per_tenant: 2,
            max_applies: 8,
            max_page_rows: 10_000,
            cors_origins: Vec::new(),
            pool_size: 16,
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The token settings.
    #[error(transparent)]
    Auth(#[from] auth::AuthSetupError),
    /// The database.
    #[error(transparent)]
    Db(#[from] nexus_postgres::Error),
    /// A setting.
    #[error("{0}")]
    Config(String),
    /// The socket.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

struct Shared {
    pool: Pool,
    hub_id: String,
    auth: Auth,
    max_page_rows: usize,
    applies: Mutex<HashMap<String, Arc<Semaphore>>>,
    max_applies_per_tenant: usize,
    /// Applies over all tenants.
    all_applies: Arc<Semaphore>,
    max_body: usize,
    max_push: u64,
    /// Pushes' transactions that their sources' pulls may leave out.
    own: own::OwnTransactions,
}

impl Shared {
    /// The rows of a pull or snapshot page: what the client asked for
    /// (the server's limit when it did not ask), from 1 to that limit.
    fn page_rows(&self, asked: Option<usize>) -> usize {
        asked
            .unwrap_or(self.max_page_rows)
            .clamp(1, self.max_page_rows)
    }
}

type AppState = Arc<Shared>;

/// A server bound to its address, not yet serving.
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish()
    }
}

impl Server {
    /// Migrates the database, checks the settings and binds the address.
    pub async fn bind(config: Config, auth: Auth) -> Result<Server, ServeError> {
        let mut client = config.db.connect("nexus-serve", None).await?;
        nexus_postgres::migrate(&mut client).await?;
        let hub_id: String = client
            .query_one("SELECT store_id FROM nexus_state WHERE id = 1", &[])
            .await
            .map_err(nexus_postgres::Error::pg("reading the database's id"))?
            .get(0);
        drop(client);
        let pool = nexus_postgres::pool(
            &config.db,
            PoolOptions {
                size: config.pool_size.max(1),
                application_name: "nexus-serve".to_string(),
                statement_timeout: config.request_timeout,
                wait_timeout: config.request_timeout,
            },
        )?;
        let shared = Arc::new(Shared {
            pool,
            hub_id,
            auth,
            max_page_rows: config.max_page_rows.max(1),
            applies: Mutex::new(HashMap::new()),
            max_applies_per_tenant: config.max_applies_per_tenant.max(1),
            all_applies: Arc::new(Semaphore::new(config.max_applies.max(1))),
            max_body: config.max_body_bytes,
            max_push: config.max_push_bytes,
            own: own::OwnTransactions::default(),
        });
        let router = router(shared, &config)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Listen {
                addr: config.listen,
                source,
            })?;
        Ok(Server { listener, router })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound socket")
    }

    /// Serves until `shutdown` completes, then finishes the requests in
    /// flight and returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn router(shared: AppState, config: &Config) -> Result<Router, ServeError> {
    let protocol = HeaderValue::from_str(&PROTOCOL_VERSION.to_string()).expect("digits");
    let mut app = Router::new()
        .route(HEALTH, get(health))
        .route(STATE, get(state))
        .route(PUSH, post(push))
        .route(PUSH_PART, post(push_part))
        .route(PULL, get(pull))
        .route(SNAPSHOT, get(snapshot))
        .fallback(not_found)
        .layer(middleware::from_fn(check_protocol))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(shared);
    if !config.cors_origins.is_empty() {
        let origins = if config.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            let list = config
                .cors_origins
                .iter()
                .map(|o| {
                    HeaderValue::from_str(o.trim_end_matches('/'))
                        .map_err(|_| ServeError::Config(format!("invalid CORS origin {o:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            AllowOrigin::list(list)
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static(PROTOCOL_HEADER),
                    HeaderName::from_static(QUERY_HEADER),
                ])
                .expose_headers([HeaderName::from_static(PROTOCOL_HEADER)])
                .max_age(Duration::from_secs(600)),
        );
    }
    Ok(app
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static(PROTOCOL_HEADER),
            protocol,
        ))
        // Answers depend on the token and on parameters that may come in a
        // header: no cache keeps them.
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(
            // One line per request: method, path (no query, no headers:
            // tokens stay out of the log), status, latency, and what a push
            // or pull did (recorded on the request's span by the handler).
            TraceLayer::new_for_http()
                .make_span_with(|r: &Request| {
                    use tracing::field::Empty;
                    tracing::info_span!(
                        "request",
                        method = %r.method(),
                        path = %r.uri().path(),
                        tenant = Empty,
                        source = Empty,
                        rows = Empty,
                        conflicts = Empty,
                        left_out = Empty,
                    )
                })
                .on_request(())
                .on_response(|r: &Response, latency: Duration, _span: &tracing::Span| {
                    tracing::info!(
                        status = r.status().as_u16(),
                        // Milliseconds, to the microsecond.
                        ms = (latency.as_micros() as f64) / 1000.0,
                        "answered"
                    );
                })
                .on_failure(()),
        ))
}

/// Refuses a request that names a protocol version this server does not speak.
async fn check_protocol(request: Request, next: Next) -> Response {
    if let Some(v) = request.headers().get(PROTOCOL_HEADER) {
        let ok =
            v.to_str().ok().and_then(|v| v.trim().parse::<u32>().ok()) == Some(PROTOCOL_VERSION);
        if !ok {
            return ApiError::bad_request(format!(
                "protocol version {:?} is not spoken here; this server speaks {PROTOCOL_VERSION}",
                String::from_utf8_lossy(v.as_bytes())
            ))
            .into_response();
        }
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "not_found",
        message: format!(
            "no such endpoint; this server has {HEALTH}, {STATE}, {PUSH}, {PULL} and {SNAPSHOT}"
        ),
        applied: None,
    }
}

fn tenant(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let value = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?,
        ),
    };
    shared.auth.tenant(value)
}

async fn health(State(shared): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let client = nexus_postgres::get(&shared.pool)
        .await
        .map_err(|e| ApiError::unavailable(format!("the database does not answer: {e}")))?;
    client.simple_query("SELECT 1").await.map_err(|e| {
        ApiError::unavailable(format!(
            "the database does not answer: {}",
            nexus_postgres::describe(&e)
        ))
    })?;
    Ok(Json(
        serde_json::json!({"status": "ok", "protocol": PROTOCOL_VERSION}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceQuery {
    source: String,
}

/// A `source` parameter: a store's id, by the rule a change file's
/// `source_id` follows (so that every source that can push can also pull
/// and ask its state).
fn check_source(source: &str) -> Result<(), ApiError> {
    nexus_core::validate_name("source", source)
        .map_err(|e| ApiError::bad_request(format!("`source` must be a store's id: {e}")))
}

/// A request's parameters: its URL's query string, or the same in the
/// [`QUERY_HEADER`] (a browser's: its URL then stays the same from request
/// to request, so that the CORS preflight is asked once per endpoint, not
/// for every new position); not both. Read as the handler asks (after the
/// token: a request without a valid one gets 401 whatever its parameters).
struct Params<T>(Result<T, ApiError>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Params(params(parts)))
    }
}

fn params<T: DeserializeOwned>(parts: &Parts) -> Result<T, ApiError> {
    let bad = |what: String| ApiError::bad_request(format!("the query string: {what}"));
    let uri = match (parts.uri.query(), parts.headers.get(QUERY_HEADER)) {
        (None | Some(QUERY_IN_HEADER), Some(h)) => h
            .to_str()
            .ok()
            .and_then(|q| format!("/?{q}").parse::<Uri>().ok())
            .ok_or_else(|| bad(format!("the {QUERY_HEADER} header is not one")))?,
        (Some(QUERY_IN_HEADER), None) => {
            return Err(ApiError::bad_request(format!(
                "`{QUERY_IN_HEADER}` says the parameters are in the {QUERY_HEADER} header, which is missing"
            )));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "parameters come in the query string or in the {QUERY_HEADER} header, not both"
            )));
        }
        (_, None) => parts.uri.clone(),
    };
    Query::try_from_uri(&uri)
        .map(|Query(t)| t)
        .map_err(|e| bad(e.body_text()))
}

/// The source's watermark, for a caller that may write `tenant` (403 when
/// another tenant's token pushed for the source first).
async fn watermark(
    client: &nexus_postgres::PgClient,
    source: &str,
    tenant: &str,
) -> Result<i64, ApiError> {
    Ok(nexus_sync::source_watermark(&client.cached(), source, Some(tenant)).await?)
}

async fn state(
    State(shared): State<AppState>,
    headers: HeaderMap,
    q: Params<SourceQuery>,
) -> Result<Json<protocol::State>, ApiError> {
    let tenant = tenant(&shared, &headers)?;
    let q = q.0?;
    check_source(&q.source)?;
    let client = nexus_postgres::get(&shared.pool).await?;
    Ok(Json(protocol::State {
        protocol: PROTOCOL_VERSION,
        hub_id: shared.hub_id.clone(),
        watermark: watermark(&client, &q.source, &tenant).await?,
        max_body: Some(shared.max_body as u64),
        checks_hub: true,
        query_header: true,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushQuery {
    /// How far the pushing store had pulled from this database; absent: a
    /// change file posted as it is (the rule of `sync --from-changes`).
    base: Option<i64>,
    /// With `parts`: the push's upload, whose other parts are staged.
    upload: Option<String>,
    parts: Option<u32>,
    /// The id of the database whose feed `base` counts in, as the client
    /// last heard it ([`protocol::State::hub_id`]): a client that pushes
    /// without asking [`protocol::STATE`] first names it, and a server now
    /// in front of another database refuses the push (409 `hub_changed`,
    /// nothing applied) instead of applying it by a base of another feed.
    hub: Option<String>,
}

/// A place among the tenant's applies and among all applies: a bounded
/// number at once of each; the rest wait. Taken before a body is read, so
/// that a request waiting for its turn holds no body in memory; the
/// tenant's place first, so that a tenant's queue holds none of the others'.
async fn apply_permit(shared: &Shared, tenant: &str) -> Result<ApplyPermit, ApiError> {
    let semaphore = {
        let mut applies = shared.applies.lock().expect("not poisoned");
        applies
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(shared.max_applies_per_tenant)))
            .clone()
    };
    let closed = |_| ApiError::unavailable("the server is shutting down");
    let tenant = semaphore.acquire_owned().await.map_err(closed)?;
    let all = shared
        .all_applies
        .clone()
        .acquire_owned()
        .await
        .map_err(closed)?;
    Ok(ApplyPermit {
        _tenant: tenant,
        _all: all,
    })
}

/// A place among the tenant's applies and among all applies, until dropped.
struct ApplyPermit {
    _tenant: tokio::sync::OwnedSemaphorePermit,
    _all: tokio::sync::OwnedSemaphorePermit,
}

/// The change file of a push's (or a part's) body.
async fn change_file(request: Request) -> Result<ChangeFile, ApiError> {
    let body = body(request).await?;
    Ok(ChangeFile::decode(&body)?)
}

/// A request's body within the server's limit, or a 413 that says how to
/// push less at once.
async fn body(request: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, &())
        .await
        .map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!(
                    "the push is larger than this server takes: {}; push in smaller windows (--window; maxRows in the browser)",
                    e.body_text()
                ))
            } else {
                ApiError::bad_request(format!("the body: {}", e.body_text()))
            }
        })
}

/// An upload's id as a client names it: 1 to 64 letters, digits and `-`.
fn check_upload(upload: &str) -> Result<(), ApiError> {
    if upload.is_empty()
        || upload.len() > 64
        || !upload
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::bad_request(
            "`upload` must be 1 to 64 letters, digits and dashes",
        ));
    }
    Ok(())
}

/// Refuses a request that names another database than this server's
/// (`hub`: the one whose feed the client's `base` or position counts in, as
/// it last heard it): 409 `hub_changed`, nothing done; the client asks
/// [`protocol::STATE`] again.
fn same_hub(shared: &Shared, hub: Option<&str>) -> Result<(), ApiError> {
    match hub {
        Some(hub) if hub != shared.hub_id => Err(ApiError::hub_changed(format!(
            "this server's database is {}, not {hub}: ask /v1/state again",
            shared.hub_id
        ))),
        _ => Ok(()),
    }
}

/// The most parts one push may have (a client's `parts` is checked
/// against it before anything is sized by it).
const MAX_PARTS: u32 = 1_000_000;

/// How long the parts of an upload that never completes are kept.
const STAGED_FOR: &str = "1 day";

async fn push(
    State(shared): State<AppState>,
    headers: HeaderMap,
    q: Params<PushQuery>,
    request: Request,
) -> Result<Json<Pushed<nexus_sync::SyncReport>>, ApiError> {
    // The token first, then a place among the tenant's applies, and only
    // then the body.
    let tenant = tenant(&shared, &headers)?;
    let q = q.0?;
    same_hub(&shared, q.hub.as_deref())?;
    let permit = apply_permit(&shared, &tenant).await?;
    let mut file = change_file(request).await?;
    let mut client = nexus_postgres::get(&shared.pool).await?;
    let upload = match (q.upload, q.parts) {
        (None, None) => None,
        (Some(upload), Some(parts)) if (1..=MAX_PARTS).contains(&parts) => {
            check_upload(&upload)?;
            file = staged(&client, &upload, parts, &tenant, file).await?;
            Some(upload)
        }
        _ => {
            return Err(ApiError::bad_request(
                "`upload` and `parts` (1 to 1,000,000) come together",
            ));
        }
    };
    let source = file.source_id.clone();
    let applied = nexus_sync::apply_push(&mut client, file, q.base, Some(&tenant)).await?;
    drop(permit);
    if let Some(id) = applied.own_transaction {
        shared.own.note(&tenant, &source, id);
    }
    let report = applied.report;
    if let Some(upload) = upload {
        // Applied: its parts go (and any upload's that never completed).
        let cleaned = client
            .execute(
                &format!(
                    "DELETE FROM nexus_push_parts WHERE upload_id = $1 OR staged_at < now() - interval '{STAGED_FOR}'"
                ),
                &[&upload],
            )
            .await;
        if let Err(e) = cleaned {
            tracing::warn!(error = %e, "removing the applied parts of a push");
        }
    }
    // Told on the request's one line.
    tracing::Span::current()
        .record("tenant", tracing::field::display(&tenant))
        .record("source", tracing::field::display(&source))
        .record("rows", report.rows())
        .record("conflicts", report.conflicts.len());
    Ok(Json(Pushed {
        protocol: PROTOCOL_VERSION,
        report,
    }))
}

/// The whole push of `upload`: its first `parts - 1` parts, staged by this
/// tenant for `last`'s source, joined with `last`.
async fn staged(
    client: &tokio_postgres::Client,
    upload: &str,
    parts: u32,
    tenant: &str,
    last: ChangeFile,
) -> Result<ChangeFile, ApiError> {
    let rows = client
        .query(
            "SELECT part, body FROM nexus_push_parts \
             WHERE upload_id = $1 AND tenant_id = $2 AND source_id = $3 AND part < $4 ORDER BY part",
            &[&upload, &tenant, &last.source_id, &(parts as i32 - 1)],
        )
        .await
        .map_err(nexus_postgres::Error::pg("reading the staged parts of a push"))?;
    let mut files = Vec::with_capacity(rows.len() + 1);
    // Each body goes once decoded.
    for (k, row) in rows.into_iter().enumerate() {
        let part: i32 = row.get(0);
        if part != k as i32 {
            break;
        }
        let body: &[u8] = row.get(1);
        files.push(ChangeFile::decode(body)?);
    }
    if files.len() + 1 != parts as usize {
        return Err(ApiError::incomplete(format!(
            "part {} of upload {upload} is not staged here (parts are kept for {STAGED_FOR}): push again from the first part",
            files.len()
        )));
    }
    files.push(last);
    protocol::join_parts(files)
        .map_err(|e| ApiError::bad_request(format!("the parts of upload {upload}: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartQuery {
    upload: String,
    part: u32,
}

/// Stages one part of a push too large for one request; the push's last
/// request ([`push`] with `upload` and `parts`) applies them all.
async fn push_part(
    State(shared): State<AppState>,
    headers: HeaderMap,
    q: Params<PartQuery>,
    request: Request,
) -> Result<Json<Staged>, ApiError> {
    let tenant = tenant(&shared, &headers)?;
    let q = q.0?;
    check_upload(&q.upload)?;
    if q.part >= MAX_PARTS {
        return Err(ApiError::bad_request(
            "`part` must be below 1,000,000 (parts count from 0)",
        ));
    }
    let permit = apply_permit(&shared, &tenant).await?;
    // The part is stored as it came; it is decoded here only so that rows
    // that cannot be applied are refused now, naming the part.
    let body = body(request).await?;
    let source = ChangeFile::decode(&body)
        .map(|file| file.source_id)
        .map_err(|e| {
            ApiError::bad_request(format!("part {} of upload {}: {e}", q.part, q.upload))
        })?;
    // Without a copy: the buffer is this request's alone.
    let body = Vec::from(body);
    let client = nexus_postgres::get(&shared.pool).await?;
    let before: i64 = client
        .query_one(
            "SELECT COALESCE(sum(octet_length(body)), 0)::bigint FROM nexus_push_parts WHERE upload_id = $1 AND part <> $2",
            &[&q.upload, &(q.part as i32)],
        )
        .await
        .map_err(nexus_postgres::Error::pg("measuring the staged parts of a push"))?
        .get(0);
    if before as u64 + body.len() as u64 > shared.max_push {
        return Err(ApiError::too_large(format!(
            "the push's parts add up to more than this server takes in one push ({} bytes, max_push_bytes)",
            shared.max_push
        )));
    }
    // A part sent again replaces itself; another tenant's or source's
    // upload of the same name is not touched.
    let staged = client
        .execute(
            "INSERT INTO nexus_push_parts (upload_id, part, tenant_id, source_id, body, staged_at) \
             VALUES ($1, $2, $3, $4, $5, now()) \
             ON CONFLICT (upload_id, part) DO UPDATE SET body = EXCLUDED.body, staged_at = EXCLUDED.staged_at \
             WHERE nexus_push_parts.tenant_id = EXCLUDED.tenant_id AND nexus_push_parts.source_id = EXCLUDED.source_id",
            &[&q.upload, &(q.part as i32), &tenant, &source, &body],
        )
        .await
        .map_err(nexus_postgres::Error::pg("staging a part of a push"))?;
    drop(permit);
    if staged == 0 {
        return Err(ApiError::incomplete(format!(
            "upload {} belongs to another source: push again with a new upload",
            q.upload
        )));
    }
    Ok(Json(Staged {
        protocol: PROTOCOL_VERSION,
        upload: q.upload,
        part: q.part,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullQuery {
    #[serde(default)]
    after: i64,
    max_rows: Option<usize>,
    source: Option<String>,
    within: Option<String>,
    /// The database whose feed `after` counts in ([`same_hub`]).
    hub: Option<String>,
}

/// A cursor of the query parameter `name` (JSON of a
/// [`nexus_core::SnapshotCursor`], as an earlier answer gave it), or a 400
/// that says what it must be.
fn cursor(
    name: &str,
    json: Option<&str>,
    what: &str,
) -> Result<Option<nexus_core::SnapshotCursor>, ApiError> {
    json.map(serde_json::from_str::<nexus_core::SnapshotCursor>)
        .transpose()
        .map_err(|e| {
            ApiError::bad_request(format!(
                "`{name}` must be a snapshot cursor, {what} as JSON: {e}"
            ))
        })
}

async fn pull(
    State(shared): State<AppState>,
    headers: HeaderMap,
    q: Params<PullQuery>,
) -> Result<Json<Pulled>, ApiError> {
    let tenant = tenant(&shared, &headers)?;
    let q = q.0?;
    same_hub(&shared, q.hub.as_deref())?;
    if q.after < 0 {
        return Err(ApiError::bad_request(
            "`after` must be a position of the feed, 0 or more",
        ));
    }
    let within = cursor(
        "within",
        q.within.as_deref(),
        "the `within` of the previous answer",
    )?;
    let rows = shared.page_rows(q.max_rows);
    let mut pooled = nexus_postgres::get(&shared.pool).await?;
    let watermark = match &q.source {
        Some(s) => {
            check_source(s)?;
            watermark(&pooled, s, &tenant).await?
        }
        None => 0,
    };
    // The caller's own transactions, unread ([`own`]).
    let leave_out = match &q.source {
        Some(s) => shared.own.of(&tenant, s),
        None => Vec::new(),
    };
    let (client, cache) = pooled.parts();
    let page = nexus_pg::read_tenant_page(
        client,
        cache,
        Some(&tenant),
        q.after,
        within.as_ref(),
        rows,
        &leave_out,
    )
    .await?;
    let span = tracing::Span::current();
    if let Some(s) = &q.source {
        let through = page.changes.through;
        shared
            .own
            .passed(&tenant, s, through, page.within.is_some());
        span.record("source", tracing::field::display(s));
    }
    // Told on the request's one line.
    span.record("tenant", tracing::field::display(&tenant))
        .record("rows", page.changes.len() as u64);
    if page.left_out > 0 {
        span.record("left_out", page.left_out);
    }
    Ok(Json(Pulled {
        protocol: PROTOCOL_VERSION,
        hub_id: shared.hub_id.clone(),
        watermark,
        changes: page.changes,
        referenced_files: page.referenced_files,
        referenced_versions: page.referenced_versions,
        caught_up: page.caught_up,
        within: page.within,
        left_out: page.left_out,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotQuery {
    after: Option<String>,
    max_rows: Option<usize>,
    /// The database whose snapshot the client loads ([`same_hub`]).
    hub: Option<String>,
}

async fn snapshot(
    State(shared): State<AppState>,
    headers: HeaderMap,
    q: Params<SnapshotQuery>,
) -> Result<Json<Snapshotted>, ApiError> {
    let tenant = tenant(&shared, &headers)?;
    let q = q.0?;
    same_hub(&shared, q.hub.as_deref())?;
    let after = cursor(
        "after",
        q.after.as_deref(),
        "the `next` of the previous answer",
    )?;
    let rows = shared.page_rows(q.max_rows);
    let mut pooled = nexus_postgres::get(&shared.pool).await?;
    let (client, cache) = pooled.parts();
    let page =
        nexus_pg::read_snapshot_page(client, cache, Some(&tenant), after.as_ref(), rows).await?;
    Ok(Json(Snapshotted {
        protocol: PROTOCOL_VERSION,
        hub_id: shared.hub_id.clone(),
        changes: page.changes,
        next: page.next,
    }))
}

/// Completes on Ctrl-C or SIGTERM: the usual way to stop a server.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}
