//! The HTTP API (axum): JSON under `/v1`, plus `/healthz`, `/readyz` and
//! `/metrics`. Only `host/src/api*` knows HTTP.
//!
//! Each area is a module exposing `router() -> OpenApiRouter<AppState>`; the
//! OpenAPI 3.1 document at `/v1/openapi.json` is assembled from those routers,
//! so it cannot drift from the handlers. Browsable docs: `/v1/docs`.

pub mod admin;
pub mod audit;
pub mod campaigns;
pub mod channels;
pub mod complaints;
pub mod crm_metrics;
pub mod customers;
pub mod error;
pub mod extract;
pub mod gdpr;
pub mod health;
pub mod interactions;
pub mod loyalty;
pub mod messages;
pub mod playbook;
pub mod plugin_calls;
pub mod plugin_uploads;
pub mod plugin_versions;
pub mod plugins;
pub mod products;
pub mod referrals;
pub mod satisfaction;
pub mod scores;
pub mod simulations;
pub mod triggers;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_scalar::Scalar;

pub use error::{ApiResult, Error};

use crate::store::Store;

/// Largest accepted request body. A batch of the maximum size
/// ([`interactions::MAX_BATCH`] items) fits comfortably.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// The plugin manifest in force (empty when none is configured); hot-reloadable.
    pub manifest: Arc<crate::manifest::ManifestHandle>,
    /// Runs the tenants' plugins (shares the manifest above).
    pub plugins: Arc<crate::plugins::PluginService>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rapport CRM API",
        description = "Customers, interactions and loyalty, per tenant. Authenticate with `Authorization: Bearer <api key>`. Errors are `{\"error\":{\"code\",\"message\",\"details\"}}`.",
    ),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

/// Operations that run a tenant's plugins, and so may be refused while the
/// tenant's share of plugin capacity is in use (429).
const PLUGIN_OPERATIONS: &[&str] = &[
    "score_customer",
    "recommendations",
    "fit_cross_sell",
    "ingest",
    "ingest_batch",
    "retry_rewards",
    "redeemable",
    "create_job",
    "inbound",
];

/// Documents the errors every operation shares, from what the operation
/// has, so that no handler can forget one and a new endpoint gets them too:
/// a key (all of them) 401 and 403; a JSON body 400, 413, 415 and 422 (bad
/// syntax, size, content type, shape, NUL); any other body 413; path
/// parameters 400, 404 and 422 (NUL); query parameters 400 and 422; plugin
/// calls 429; everything 500. A status an operation documents itself keeps
/// its own description.
struct SharedErrors;

impl SharedErrors {
    fn response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
            .into()
    }

    fn add(operation: &mut utoipa::openapi::path::Operation) {
        use utoipa::openapi::path::ParameterIn;
        let params = operation.parameters.as_deref().unwrap_or_default();
        let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
        let (path, query) = (has(ParameterIn::Path), has(ParameterIn::Query));
        let json_body = operation
            .request_body
            .as_ref()
            .map(|body| body.content.keys().any(|c| c.contains("json")));
        let plugins = operation
            .operation_id
            .as_deref()
            .is_some_and(|id| PLUGIN_OPERATIONS.contains(&id));
        let mut shared: Vec<(&str, &str)> = vec![
            ("401", "`unauthorized`: missing, unknown or revoked API key"),
            ("403", "`forbidden`: the key's role may not do this"),
            ("500", "`internal`: a fault of the server (logged, never explained)"),
        ];
        if json_body == Some(true) || path || query {
            shared.push((
                "400",
                "Malformed request: `invalid_json`, `invalid_body`, `invalid_query` or `invalid_path`",
            ));
            shared.push((
                "422",
                "`validation_failed` (`details.field` names the field or parameter): an invalid value, \
                 text holding NUL, or a body that is not a JSON object",
            ));
        }
        if json_body.is_some() {
            shared.push(("413", "`payload_too_large`: the body is over the limit"));
        }
        if json_body == Some(true) {
            shared.push(("415", "`unsupported_media_type`: the body is not `application/json`"));
        }
        if path {
            shared.push(("404", "`not_found`: no such object in this tenant"));
        }
        if plugins {
            shared.push(("429", "The tenant's share of plugin capacity is in use; retry later"));
        }
        for (status, description) in shared {
            let response = operation
                .responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| Self::response(description));
            // A status the handler documents without saying why gets the shared reason.
            if let utoipa::openapi::RefOr::T(response) = response
                && response.description.is_empty()
            {
                response.description = description.to_string();
            }
        }
    }
}

impl utoipa::Modify for SharedErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.options,
                &mut item.head,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                Self::add(operation);
            }
        }
    }
}

/// The `/v1` routers and the OpenAPI document they describe.
pub fn v1() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(admin::router())
        .merge(audit::router())
        .merge(customers::router())
        .merge(interactions::router())
        .merge(products::router())
        .merge(loyalty::router())
        .merge(gdpr::router())
        .merge(plugins::router())
        .merge(plugin_calls::router())
        .merge(plugin_versions::router())
        .merge(plugin_uploads::router())
        .merge(simulations::router())
        .merge(scores::router())
        .merge(channels::router())
        .merge(messages::router())
        .merge(triggers::router())
        .merge(campaigns::router())
        .merge(crm_metrics::router())
        .merge(playbook::router())
        .merge(complaints::router())
        .merge(satisfaction::router())
        .merge(referrals::router())
        .split_for_parts();
    // After the merge: the modifier works on every operation of every router.
    utoipa::Modify::modify(&SharedErrors, &mut openapi);
    (router, openapi)
}

/// The whole application, ready to serve.
pub fn app(state: AppState) -> Router {
    let (v1, openapi) = v1();
    // Both documents are rendered once and shared (`Bytes` clones are
    // reference counts): axum clones every route's handler for each new
    // connection, and a handler owning the OpenAPI document cost ~2 MiB per
    // connection (measured in the flood benchmark: 2 GiB for 900 clients).
    let openapi_json = axum::body::Bytes::from(serde_json::to_vec(&openapi).unwrap_or_default());
    let docs_html = axum::body::Bytes::from(Scalar::new(openapi).to_html());
    Router::new()
        .merge(v1)
        .merge(health::router())
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let body = openapi_json.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/v1/docs",
            axum::routing::get(move || {
                let html = docs_html.clone();
                async move { axum::response::Html(html) }
            }),
        )
        .fallback(|| async { Error::NotFound("route") })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(state.clone(), track_http))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            Error::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// The policy of the `/v1/docs` page: its one script comes from the CDN
/// (Scalar's standalone bundle), which injects inline styles, loads its
/// fonts and compiles its templates and schema examples at run time
/// (`new Function`, hence `'unsafe-eval'`, on this page only; no inline
/// script runs: the OpenAPI document is a JSON data block); the page only
/// talks to this server ("try it" calls go to the API). Nothing may frame it.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'unsafe-eval' https://cdn.jsdelivr.net; \
    style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.scalar.com; \
    font-src 'self' data: https://cdn.jsdelivr.net https://fonts.scalar.com; img-src 'self' data: blob: https:; \
    connect-src 'self'; worker-src blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers on every answer: `nosniff` everywhere (no JSON or metrics text
/// is ever read as HTML or script); `Cache-Control: no-store` on every
/// `/v1` answer, because some show a new API key once and every other one
/// is a tenant's data, which no shared cache should keep; the docs page's
/// Content-Security-Policy.
async fn security_headers(request: Request, next: Next) -> Response {
    use axum::http::{HeaderValue, header};
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if path == "/v1" || path.starts_with("/v1/") {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if path == "/v1/docs" || path.starts_with("/v1/docs/") {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
    }
    response
}

/// Request counter and latency histogram per route template and status.
async fn track_http(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .http_request(&method, &route, response.status().as_u16(), started.elapsed());
    response
}
