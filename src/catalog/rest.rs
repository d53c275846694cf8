//! Commit backend for Iceberg REST catalogs.
//!
//! iceberg-catalog-rest keeps its HTTP client private, so icemaint has this small client of its
//! own for the one call it needs: `POST /v1/{prefix}/namespaces/{ns}/tables/{table}` with a
//! `CommitTableRequest`. Setup follows the REST spec and Java's `RESTSessionCatalog`:
//! `GET /v1/config` for server defaults and overrides (`prefix`, `uri`), a static bearer `token`
//! or OAuth2 client credentials (`credential = client_id:secret`) refreshed before they expire and
//! once on a 401, and `header.*` properties as extra headers. Tokens and secrets are held in
//! [`Secret`] and never logged.
//!
//! Why not the crate's `Catalog::update_table`: it takes a `TableCommit` that code outside
//! iceberg cannot build with its own updates (our `replace` snapshot), and a commit must tell
//! "the catalog refused it" (409: retry from a new base, or give up) from "the outcome is
//! unknown" (a timeout or a 5xx after the request was sent: the files it references must not be
//! cleaned up), which this client maps to distinct [`CommitError`]s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{TableIdent, TableRequirement, TableUpdate};
use iceberg_catalog_rest::{CommitTableRequest, CommitTableResponse};
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{CommitBackend, CommitError, table_after_commit};
use crate::config::{CatalogConfig, Secret};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Generous: a commit may wait on the server's own retries against its database.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Refresh a token this long before it expires at most (10% of its lifetime when shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Longest server error text quoted in an error.
const MAX_ERROR_TEXT: usize = 500;

/// Errors setting up the REST commit backend.
#[derive(Debug, thiserror::Error)]
pub enum RestBackendError {
    #[error("invalid rest catalog configuration: {0}")]
    Config(String),
    #[error("rest catalog request failed: {0}")]
    Http(String),
    #[error("rest catalog authentication failed: {0}")]
    Auth(String),
    #[error("rest catalog answered {status} to {what}: {message}")]
    Status {
        what: &'static str,
        status: u16,
        message: String,
    },
}

impl RestBackendError {
    pub fn is_retryable(&self) -> bool {
        match self {
            RestBackendError::Http(_) => true,
            RestBackendError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// OAuth2 client-credentials settings.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OAuthClient {
    endpoint: String,
    client_id: Option<String>,
    client_secret: Secret,
    scope: String,
    audience: Option<String>,
    resource: Option<String>,
}

#[derive(Debug, Default)]
struct TokenState {
    token: Option<Secret>,
    /// When to fetch a new token proactively; `None`: only when the server says 401.
    refresh_at: Option<Instant>,
}

/// How requests are authenticated.
#[derive(Debug, Default)]
struct Auth {
    oauth: Option<OAuthClient>,
    state: Mutex<TokenState>,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct OAuthErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// The REST spec's `ErrorResponse`.
#[derive(Debug, Deserialize)]
struct ErrorResponse {
    error: ErrorModel,
}

#[derive(Debug, Deserialize)]
struct ErrorModel {
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigResponse {
    #[serde(default)]
    defaults: BTreeMap<String, String>,
    #[serde(default)]
    overrides: BTreeMap<String, String>,
}

impl Auth {
    fn from_props(uri: &str, props: &BTreeMap<String, String>) -> Result<Self, RestBackendError> {
        let oauth = match props.get("credential") {
            None => None,
            Some(cred) => {
                let (client_id, secret) = match cred.split_once(':') {
                    Some((id, secret)) => (Some(id.to_string()), secret.to_string()),
                    None => (None, cred.clone()),
                };
                if secret.is_empty() {
                    return Err(RestBackendError::Config(
                        "credential must be client_id:client_secret".to_string(),
                    ));
                }
                let endpoint = match props.get("oauth2-server-uri") {
                    Some(u) if u.starts_with("http://") || u.starts_with("https://") => u.clone(),
                    // Java resolves a relative server URI against the catalog URI.
                    Some(u) => format!("{uri}/{}", u.trim_start_matches('/')),
                    None => format!("{uri}/v1/oauth/tokens"),
                };
                Some(OAuthClient {
                    endpoint,
                    client_id,
                    client_secret: Secret::new(secret),
                    scope: props
                        .get("scope")
                        .cloned()
                        .unwrap_or_else(|| "catalog".to_string()),
                    audience: props.get("audience").cloned(),
                    resource: props.get("resource").cloned(),
                })
            }
        };
        let state = TokenState {
            token: props.get("token").map(Secret::new),
            refresh_at: None,
        };
        Ok(Self {
            oauth,
            state: Mutex::new(state),
        })
    }

    /// The bearer token to send, fetching or refreshing it first when needed.
    async fn bearer(
        &self,
        client: &reqwest::Client,
        headers: &HeaderMap,
    ) -> Result<Option<Secret>, String> {
        let mut state = self.state.lock().await;
        let Some(oauth) = &self.oauth else {
            return Ok(state.token.clone());
        };
        let due = state.token.is_none() || state.refresh_at.is_some_and(|t| Instant::now() >= t);
        if due {
            match fetch_token(client, headers, oauth).await {
                Ok((token, expires_in)) => {
                    tracing::debug!(
                        expires_in_s = expires_in.map(|d| d.as_secs()),
                        "obtained rest catalog token"
                    );
                    state.token = Some(token);
                    state.refresh_at = expires_in.map(|ttl| {
                        let margin = (ttl / 10).min(REFRESH_MARGIN);
                        Instant::now() + ttl.saturating_sub(margin)
                    });
                }
                // Early refresh failed: the old token may still be valid; a 401 will tell.
                Err(e) if state.token.is_some() => {
                    tracing::warn!(error = %e, "refreshing the rest catalog token failed; keeping the current one");
                    state.refresh_at = Some(Instant::now() + REFRESH_MARGIN / 4);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(state.token.clone())
    }

    /// Drops the current token after a 401; `false` when no new one can be obtained.
    async fn invalidate(&self) -> bool {
        if self.oauth.is_none() {
            return false;
        }
        let mut state = self.state.lock().await;
        state.token = None;
        state.refresh_at = None;
        true
    }
}

async fn fetch_token(
    client: &reqwest::Client,
    headers: &HeaderMap,
    oauth: &OAuthClient,
) -> Result<(Secret, Option<Duration>), String> {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "client_credentials"),
        ("client_secret", oauth.client_secret.expose()),
        ("scope", &oauth.scope),
    ];
    if let Some(id) = &oauth.client_id {
        form.push(("client_id", id));
    }
    if let Some(a) = &oauth.audience {
        form.push(("audience", a));
    }
    if let Some(r) = &oauth.resource {
        form.push(("resource", r));
    }
    let mut headers = headers.clone();
    headers.remove(CONTENT_TYPE);
    let resp = client
        .post(&oauth.endpoint)
        .headers(headers)
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("token request to {} failed: {e}", oauth.endpoint))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading the token response failed: {e}"))?;
    if status.is_success() {
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| format!("token response is not valid json: {e}"))?;
        return Ok((
            Secret::new(t.access_token),
            t.expires_in.filter(|s| *s > 0).map(Duration::from_secs),
        ));
    }
    let message = match serde_json::from_slice::<OAuthErrorResponse>(&body) {
        Ok(e) => match e.error_description {
            Some(d) => format!("{}: {d}", e.error),
            None => e.error,
        },
        Err(_) => error_text(&body),
    };
    Err(format!("token endpoint answered {status}: {message}"))
}

/// Extra headers: `header.<name>` properties plus content type and user agent.
fn extra_headers(props: &BTreeMap<String, String>) -> Result<HeaderMap, RestBackendError> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        USER_AGENT,
        HeaderValue::from_str(&format!("icemaint/{}", env!("CARGO_PKG_VERSION")))
            .expect("a static user agent is a valid header"),
    );
    for (key, value) in props {
        let Some(name) = key.strip_prefix("header.") else {
            continue;
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| RestBackendError::Config(format!("invalid header name in {key}")))?;
        // The value is not quoted in errors and hidden from `Debug`: it may be a credential.
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| RestBackendError::Config(format!("invalid header value for {key}")))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// Percent-encodes one URL path segment: everything but RFC 3986 unreserved characters, so that
/// `+`, `/` and the namespace separator 0x1F survive servers that decode like Java's
/// `URLDecoder`.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{base}/namespaces/{levels joined by 0x1F}/tables/{name}`.
fn table_url(base: &str, ident: &TableIdent) -> String {
    let ns = ident.namespace().join("\u{1f}");
    format!(
        "{base}/namespaces/{}/tables/{}",
        encode_segment(&ns),
        encode_segment(ident.name())
    )
}

/// `{uri}/v1` plus the prefix, if any.
fn base_url(uri: &str, prefix: Option<&str>) -> String {
    let uri = uri.trim_end_matches('/');
    match prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(p) => format!("{uri}/v1/{p}"),
        None => format!("{uri}/v1"),
    }
}

/// A server's error body as text for an error message: the spec's `error.message` when present.
fn error_text(body: &[u8]) -> String {
    if let Ok(e) = serde_json::from_slice::<ErrorResponse>(body) {
        return match e.error.kind {
            Some(kind) => format!("{kind}: {}", e.error.message),
            None => e.error.message,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    let mut cut = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_string()
}

/// The catalog-wide configuration after merging the server's answer (Java and iceberg-rust order:
/// server defaults, then the user's properties, then server overrides).
fn merge_config(
    uri: &str,
    props: &BTreeMap<String, String>,
    server: ConfigResponse,
) -> (String, BTreeMap<String, String>) {
    let mut overrides = server.overrides;
    let uri = overrides
        .remove("uri")
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| uri.to_string());
    let mut merged = server.defaults;
    merged.extend(props.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged.extend(overrides);
    (uri, merged)
}

/// Commits through an Iceberg REST catalog.
#[derive(Debug)]
pub struct RestCommitBackend {
    client: reqwest::Client,
    /// `{uri}/v1[/{prefix}]`.
    base: String,
    headers: HeaderMap,
    auth: Auth,
}

/// Connects to the REST catalog at `cfg.uri`: reads `/v1/config` and sets up authentication.
pub async fn connect(cfg: &CatalogConfig) -> Result<RestCommitBackend, RestBackendError> {
    RestCommitBackend::connect(cfg).await
}

impl RestCommitBackend {
    /// See [`connect`].
    pub async fn connect(cfg: &CatalogConfig) -> Result<Self, RestBackendError> {
        let uri = cfg.uri.trim().trim_end_matches('/').to_string();
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(RestBackendError::Config(format!(
                "rest catalog uri must start with http:// or https://, got {uri:?}"
            )));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| RestBackendError::Http(e.to_string()))?;
        let props = &cfg.properties;
        let mut backend = Self {
            client,
            base: base_url(&uri, props.get("prefix").map(String::as_str)),
            headers: extra_headers(props)?,
            auth: Auth::from_props(&uri, props)?,
        };

        let warehouse = cfg
            .warehouse
            .clone()
            .or_else(|| props.get("warehouse").cloned());
        let config_url = format!("{uri}/v1/config");
        let resp = backend
            .send(|c| {
                let r = c.get(&config_url);
                match &warehouse {
                    Some(w) => r.query(&[("warehouse", w)]),
                    None => r,
                }
            })
            .await
            .map_err(|e| match e {
                SendError::Auth(m) => RestBackendError::Auth(m),
                SendError::Connect(m) | SendError::Other(m) => RestBackendError::Http(m),
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| RestBackendError::Http(e.to_string()))?;
        if !status.is_success() {
            return Err(RestBackendError::Status {
                what: "GET /v1/config",
                status: status.as_u16(),
                message: error_text(&body),
            });
        }
        let server: ConfigResponse = serde_json::from_slice(&body).map_err(|e| {
            RestBackendError::Http(format!("/v1/config answer is not valid json: {e}"))
        })?;
        let (uri, merged) = merge_config(&uri, props, server);

        backend.base = base_url(&uri, merged.get("prefix").map(String::as_str));
        backend.headers = extra_headers(&merged)?;
        let mut auth = Auth::from_props(&uri, &merged)?;
        if auth.oauth == backend.auth.oauth && merged.get("token") == props.get("token") {
            // Same credentials: keep the token already obtained for /v1/config.
            *auth.state.get_mut() = std::mem::take(backend.auth.state.get_mut());
        }
        backend.auth = auth;
        tracing::debug!(base = %backend.base, oauth = backend.auth.oauth.is_some(), "rest commit backend ready");
        Ok(backend)
    }

    /// Sends a request with authentication; on a 401 with refreshable credentials, fetches a new
    /// token and sends it once more (the first request was rejected, so nothing was applied).
    async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, SendError> {
        let mut refreshed = false;
        loop {
            let token = self
                .auth
                .bearer(&self.client, &self.headers)
                .await
                .map_err(SendError::Auth)?;
            let mut req = build(&self.client).headers(self.headers.clone());
            if let Some(t) = &token
                && !self.headers.contains_key(AUTHORIZATION)
            {
                req = req.bearer_auth(t.expose());
            }
            let resp = req.send().await.map_err(|e| {
                if e.is_connect() {
                    SendError::Connect(e.to_string())
                } else {
                    SendError::Other(e.to_string())
                }
            })?;
            if resp.status() == StatusCode::UNAUTHORIZED
                && !refreshed
                && self.auth.invalidate().await
            {
                tracing::info!("rest catalog answered 401; fetching a new token");
                refreshed = true;
                continue;
            }
            return Ok(resp);
        }
    }
}

/// Why a request got no answer.
#[derive(Debug)]
enum SendError {
    /// No token could be obtained: nothing was sent.
    Auth(String),
    /// The connection could not be opened: nothing was sent.
    Connect(String),
    /// Timeout, reset or another failure while the request may have reached the server.
    Other(String),
}

/// Maps a commit answer to the backend result (Java `ErrorHandlers.tableCommitHandler`).
fn commit_status_error(ident: &TableIdent, status: StatusCode, body: &[u8]) -> CommitError {
    let message = format!("{ident}: {status}: {}", error_text(body));
    match status.as_u16() {
        409 => CommitError::Conflict(message),
        404 => CommitError::NotFound(message),
        500 | 502 | 503 | 504 => CommitError::StateUnknown(message),
        _ => CommitError::Failed(message),
    }
}

#[async_trait::async_trait]
impl CommitBackend for RestCommitBackend {
    async fn commit(
        &self,
        base: &Table,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Table, CommitError> {
        let ident = base.identifier();
        let url = table_url(&self.base, ident);
        let body = serde_json::to_vec(&CommitTableRequest {
            identifier: Some(ident.clone()),
            requirements,
            updates,
        })
        .map_err(|e| {
            CommitError::Failed(format!("{ident}: cannot encode the commit request: {e}"))
        })?;

        let resp = self
            .send(|c| c.post(&url).body(body.clone()))
            .await
            .map_err(|e| match e {
                SendError::Auth(m) => CommitError::Failed(format!("{ident}: authentication: {m}")),
                SendError::Connect(m) => CommitError::Failed(format!("{ident}: {m}")),
                SendError::Other(m) => CommitError::StateUnknown(format!("{ident}: {m}")),
            })?;
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            // The server answered; if it was a success the commit happened.
            Err(e) if status.is_success() || status.is_server_error() => {
                return Err(CommitError::StateUnknown(format!(
                    "{ident}: {status} with unreadable body: {e}"
                )));
            }
            Err(_) => Default::default(),
        };
        tracing::debug!(table = %ident, status = status.as_u16(), "rest commit answered");
        if !status.is_success() {
            return Err(commit_status_error(ident, status, &bytes));
        }
        let answer: CommitTableResponse = serde_json::from_slice(&bytes).map_err(|e| {
            CommitError::StateUnknown(format!(
                "{ident}: committed, but the response is not a valid CommitTableResponse: {e}"
            ))
        })?;
        let metadata: TableMetadata = answer.metadata;
        table_after_commit(base, metadata, answer.metadata_location)
            .map_err(|e| CommitError::StateUnknown(format!("{ident}: committed, but {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iceberg::NamespaceIdent;

    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn urls_encode_namespace_levels_and_names() {
        let ident = TableIdent::new(
            NamespaceIdent::from_strs(["a b", "c+d"]).unwrap(),
            "t/1".to_string(),
        );
        assert_eq!(
            table_url(&base_url("http://h:1/", None), &ident),
            "http://h:1/v1/namespaces/a%20b%1Fc%2Bd/tables/t%2F1"
        );
        let ident = TableIdent::from_strs(["db", "tbl"]).unwrap();
        assert_eq!(
            table_url(&base_url("http://h", Some("/cat/x/")), &ident),
            "http://h/v1/cat/x/namespaces/db/tables/tbl"
        );
        assert_eq!(base_url("http://h", Some("")), "http://h/v1");
    }

    #[test]
    fn server_config_merges_defaults_props_overrides() {
        let server = ConfigResponse {
            defaults: props(&[("prefix", "d"), ("a", "default"), ("b", "default")]),
            overrides: props(&[("b", "override"), ("uri", "http://other/")]),
        };
        let (uri, merged) =
            merge_config("http://h", &props(&[("a", "user"), ("b", "user")]), server);
        assert_eq!(uri, "http://other");
        assert_eq!(merged["a"], "user");
        assert_eq!(merged["b"], "override");
        assert_eq!(merged["prefix"], "d");
        assert!(!merged.contains_key("uri"));
    }

    #[test]
    fn auth_from_properties() {
        let a = Auth::from_props("http://h", &props(&[("credential", "id:s3cr3t")])).unwrap();
        let o = a.oauth.unwrap();
        assert_eq!(o.endpoint, "http://h/v1/oauth/tokens");
        assert_eq!(o.client_id.as_deref(), Some("id"));
        assert_eq!(o.client_secret.expose(), "s3cr3t");
        assert_eq!(o.scope, "catalog");
        assert!(!format!("{o:?}").contains("s3cr3t"));

        let a = Auth::from_props(
            "http://h",
            &props(&[
                ("credential", "only-secret"),
                ("oauth2-server-uri", "https://idp/token"),
                ("scope", "PRINCIPAL_ROLE:ALL"),
            ]),
        )
        .unwrap();
        let o = a.oauth.unwrap();
        assert_eq!(o.endpoint, "https://idp/token");
        assert_eq!(o.client_id, None);
        assert_eq!(o.scope, "PRINCIPAL_ROLE:ALL");

        let a = Auth::from_props("http://h", &props(&[("token", "tok")])).unwrap();
        assert!(a.oauth.is_none());
        assert_eq!(
            a.state.try_lock().unwrap().token.as_ref().unwrap().expose(),
            "tok"
        );
        assert!(Auth::from_props("http://h", &props(&[("credential", "id:")])).is_err());
    }

    #[test]
    fn headers_from_properties() {
        let h = extra_headers(&props(&[("header.X-Tenant", "t1"), ("token", "x")])).unwrap();
        assert_eq!(h["x-tenant"], "t1");
        let h = extra_headers(&props(&[("header.X-Api-Key", "k3y")])).unwrap();
        assert!(!format!("{h:?}").contains("k3y"));
        assert_eq!(h[CONTENT_TYPE], "application/json");
        assert!(extra_headers(&props(&[("header.bad name", "v")])).is_err());
    }

    #[test]
    fn commit_answers_map_to_commit_errors() {
        let ident = TableIdent::from_strs(["db", "t"]).unwrap();
        let body = br#"{"error":{"message":"Requirement failed: branch main has changed","type":"CommitFailedException","code":409}}"#;
        match commit_status_error(&ident, StatusCode::CONFLICT, body) {
            CommitError::Conflict(m) => assert!(m.contains("branch main has changed"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            commit_status_error(&ident, StatusCode::NOT_FOUND, b""),
            CommitError::NotFound(_)
        ));
        for s in [500, 502, 503, 504] {
            assert!(matches!(
                commit_status_error(&ident, StatusCode::from_u16(s).unwrap(), b"oops"),
                CommitError::StateUnknown(_)
            ));
        }
        match commit_status_error(&ident, StatusCode::BAD_REQUEST, b"plain text") {
            CommitError::Failed(m) => assert!(m.contains("plain text"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            commit_status_error(&ident, StatusCode::FORBIDDEN, b""),
            CommitError::Failed(_)
        ));
    }

    /// A scripted REST catalog: OAuth2 token endpoint, `/v1/config` (prefix and a server header
    /// via defaults), and a table commit endpoint whose answer depends on the table name.
    #[derive(Debug, Default)]
    struct Mock {
        /// Tokens issued so far; the valid one is the last, unless revoked.
        issued: std::sync::Mutex<Vec<String>>,
        revoked: std::sync::atomic::AtomicBool,
        token_forms: std::sync::Mutex<Vec<BTreeMap<String, String>>>,
        unauthorized: std::sync::atomic::AtomicU32,
        commits: std::sync::Mutex<Vec<(String, String, serde_json::Value)>>,
        expires_in: u64,
        metadata: serde_json::Value,
    }

    impl Mock {
        fn authorized(&self, headers: &axum::http::HeaderMap) -> bool {
            let valid = self.issued.lock().unwrap().last().cloned();
            let given = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            !self.revoked.load(std::sync::atomic::Ordering::SeqCst)
                && valid.is_some()
                && given == valid.map(|t| format!("Bearer {t}"))
        }
    }

    async fn mock_handler(
        axum::extract::State(mock): axum::extract::State<std::sync::Arc<Mock>>,
        req: axum::extract::Request,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let path = parts.uri.path().to_string();
        let json = |status: u16, v: serde_json::Value| {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                v.to_string(),
            )
                .into_response()
        };
        if path == "/v1/oauth/tokens" {
            let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            mock.token_forms.lock().unwrap().push(form);
            let mut issued = mock.issued.lock().unwrap();
            let token = format!("tok{}", issued.len() + 1);
            issued.push(token.clone());
            mock.revoked
                .store(false, std::sync::atomic::Ordering::SeqCst);
            return json(
                200,
                serde_json::json!({"access_token": token, "token_type": "bearer", "expires_in": mock.expires_in}),
            );
        }
        if !mock.authorized(&parts.headers) {
            mock.unauthorized
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return json(
                401,
                serde_json::json!({"error": {"message": "not authorized", "type": "NotAuthorizedException", "code": 401}}),
            );
        }
        if path == "/v1/config" {
            assert_eq!(parts.uri.query(), Some("warehouse=wh"));
            return json(
                200,
                serde_json::json!({
                    "defaults": {"header.x-from-server": "yes"},
                    "overrides": {"prefix": "pfx"}
                }),
            );
        }
        let Some(table) = path.strip_prefix("/v1/pfx/namespaces/db%1Fsub/tables/") else {
            return json(
                404,
                serde_json::json!({"error": {"message": format!("no route {path}"), "type": "NoSuchRoute", "code": 404}}),
            );
        };
        let tenant = parts
            .headers
            .get("x-tenant")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let server_header = parts
            .headers
            .get("x-from-server")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert_eq!(server_header, "yes");
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
        mock.commits
            .lock()
            .unwrap()
            .push((table.to_string(), tenant, request));
        match table {
            "conflict" => json(
                409,
                serde_json::json!({"error": {"message": "branch main has changed", "type": "CommitFailedException", "code": 409}}),
            ),
            "gone" => json(
                404,
                serde_json::json!({"error": {"message": "table does not exist", "type": "NoSuchTableException", "code": 404}}),
            ),
            "boom" => json(
                503,
                serde_json::json!({"error": {"message": "overloaded", "type": "ServiceUnavailable", "code": 503}}),
            ),
            _ => json(
                200,
                serde_json::json!({
                    "metadata-location": "memory:///t/metadata/00001-5b9d3c2e-8a0f-4a0e-9c41-0c3a7e1f2d11.metadata.json",
                    "metadata": mock.metadata.clone(),
                }),
            ),
        }
    }

    async fn start_mock(mock: std::sync::Arc<Mock>) -> String {
        let app = axum::Router::new().fallback(mock_handler).with_state(mock);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn base_table(name: &str) -> Table {
        use iceberg::spec::{
            FormatVersion, NestedField, PrimitiveType, Schema, SortOrder, TableMetadataBuilder,
            Type, UnboundPartitionSpec,
        };
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap();
        let md = TableMetadataBuilder::new(
            schema,
            UnboundPartitionSpec::builder().build(),
            SortOrder::unsorted_order(),
            "memory:///t".to_string(),
            FormatVersion::V2,
            HashMap::new(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata;
        Table::builder()
            .identifier(TableIdent::new(
                NamespaceIdent::from_strs(["db", "sub"]).unwrap(),
                name.to_string(),
            ))
            .file_io(iceberg::io::FileIO::new_with_memory())
            .metadata(md)
            .metadata_location(
                "memory:///t/metadata/00000-0f8e4c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b.metadata.json",
            )
            .runtime(iceberg::Runtime::try_current().unwrap())
            .build()
            .unwrap()
    }

    fn rest_config(uri: String, pairs: &[(&str, &str)]) -> CatalogConfig {
        CatalogConfig {
            kind: crate::config::CatalogType::Rest,
            uri,
            name: "rest".to_string(),
            warehouse: Some("wh".to_string()),
            properties: props(pairs),
        }
    }

    fn updates() -> Vec<TableUpdate> {
        vec![TableUpdate::SetProperties {
            updates: HashMap::from([("k".to_string(), "v".to_string())]),
        }]
    }

    #[tokio::test]
    async fn oauth_token_is_fetched_sent_and_refreshed_after_401() {
        let metadata = serde_json::to_value(base_table("t").metadata()).unwrap();
        let mock = std::sync::Arc::new(Mock {
            expires_in: 3600,
            metadata,
            ..Default::default()
        });
        let uri = start_mock(mock.clone()).await;
        let backend = connect(&rest_config(
            uri,
            &[("credential", "client:s3cr3t"), ("header.X-Tenant", "acme")],
        ))
        .await
        .unwrap();
        assert!(!format!("{backend:?}").contains("s3cr3t"));
        assert!(!format!("{backend:?}").contains("tok1"));

        let t = backend
            .commit(&base_table("t"), vec![], updates())
            .await
            .unwrap();
        assert!(t.metadata_location().unwrap().contains("00001-"));
        {
            let forms = mock.token_forms.lock().unwrap();
            assert_eq!(
                forms.len(),
                1,
                "the config call and the commit share one token"
            );
            assert_eq!(forms[0]["grant_type"], "client_credentials");
            assert_eq!(forms[0]["client_id"], "client");
            assert_eq!(forms[0]["client_secret"], "s3cr3t");
            assert_eq!(forms[0]["scope"], "catalog");
            let commits = mock.commits.lock().unwrap();
            let (table, tenant, body) = &commits[0];
            assert_eq!(table, "t");
            assert_eq!(tenant, "acme");
            assert_eq!(
                body["identifier"]["namespace"],
                serde_json::json!(["db", "sub"])
            );
            assert_eq!(body["updates"][0]["action"], "set-properties");
        }

        // The server forgets the token: one 401, a new token, the same request again.
        mock.revoked
            .store(true, std::sync::atomic::Ordering::SeqCst);
        backend
            .commit(&base_table("t"), vec![], updates())
            .await
            .unwrap();
        assert_eq!(mock.token_forms.lock().unwrap().len(), 2);
        assert_eq!(
            mock.unauthorized.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(mock.commits.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn token_is_refreshed_before_it_expires() {
        let metadata = serde_json::to_value(base_table("t").metadata()).unwrap();
        let mock = std::sync::Arc::new(Mock {
            expires_in: 1,
            metadata,
            ..Default::default()
        });
        let uri = start_mock(mock.clone()).await;
        let backend = connect(&rest_config(uri, &[("credential", "client:s3cr3t")]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        backend
            .commit(&base_table("t"), vec![], updates())
            .await
            .unwrap();
        assert_eq!(mock.token_forms.lock().unwrap().len(), 2);
        assert_eq!(
            mock.unauthorized.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }

    #[tokio::test]
    async fn commit_statuses_over_http() {
        let metadata = serde_json::to_value(base_table("t").metadata()).unwrap();
        let mock = std::sync::Arc::new(Mock {
            expires_in: 3600,
            metadata,
            ..Default::default()
        });
        let uri = start_mock(mock.clone()).await;
        let backend = connect(&rest_config(
            uri.clone(),
            &[("credential", "client:s3cr3t")],
        ))
        .await
        .unwrap();
        let commit = |name: &'static str| {
            let backend = &backend;
            async move { backend.commit(&base_table(name), vec![], updates()).await }
        };
        match commit("conflict").await.unwrap_err() {
            CommitError::Conflict(m) => assert!(m.contains("branch main has changed"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            commit("gone").await.unwrap_err(),
            CommitError::NotFound(_)
        ));
        match commit("boom").await.unwrap_err() {
            CommitError::StateUnknown(m) => assert!(m.contains("overloaded"), "{m}"),
            other => panic!("{other:?}"),
        }

        // A static token that the server rejects cannot be refreshed: a definite failure.
        mock.issued.lock().unwrap().push("other".to_string());
        let static_backend = connect(&rest_config(uri.clone(), &[("token", "other")]))
            .await
            .unwrap();
        mock.revoked
            .store(true, std::sync::atomic::Ordering::SeqCst);
        match static_backend
            .commit(&base_table("t"), vec![], updates())
            .await
            .unwrap_err()
        {
            CommitError::Failed(m) => assert!(m.contains("401"), "{m}"),
            other => panic!("{other:?}"),
        }

        // Nothing listens: nothing was sent, a definite failure.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let mut offline = connect(&rest_config(uri, &[("credential", "client:s3cr3t")]))
            .await
            .unwrap();
        offline.base = format!("{dead}/v1/pfx");
        assert!(matches!(
            offline
                .commit(&base_table("t"), vec![], updates())
                .await
                .unwrap_err(),
            CommitError::Failed(_)
        ));

        // The server takes the request and drops the connection: it may have applied it.
        let resetting = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = resetting.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            while let Ok((mut sock, _)) = resetting.accept().await {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                drop(sock);
            }
        });
        offline.base = format!("http://{addr}/v1/pfx");
        assert!(matches!(
            offline
                .commit(&base_table("t"), vec![], updates())
                .await
                .unwrap_err(),
            CommitError::StateUnknown(_)
        ));
    }

    #[test]
    fn error_text_is_bounded() {
        let long = "x".repeat(2000);
        assert_eq!(error_text(long.as_bytes()).len(), MAX_ERROR_TEXT);
        assert_eq!(error_text(b"  "), "(empty body)");
    }
}
