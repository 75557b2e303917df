//! The HTTP API (axum): JSON under `/v1`, plus `/healthz`, `/readyz` and
//! `/metrics`. Only `host/src/api*` knows HTTP.
//!
//! Each area is a module exposing `router() -> OpenApiRouter<AppState>`; the
//! OpenAPI 3.1 document at `/v1/openapi.json` is assembled from those routers,
//! so it cannot drift from the handlers. Browsable docs: `/v1/docs`.

pub mod admin;
pub mod channels;
pub mod customers;
pub mod error;
pub mod extract;
pub mod gdpr;
pub mod health;
pub mod interactions;
pub mod loyalty;
pub mod messages;
pub mod plugin_calls;
pub mod plugins;
pub mod products;
pub mod scores;
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

/// The `/v1` routers and the OpenAPI document they describe.
pub fn v1() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(admin::router())
        .merge(customers::router())
        .merge(interactions::router())
        .merge(products::router())
        .merge(loyalty::router())
        .merge(gdpr::router())
        .merge(plugins::router())
        .merge(plugin_calls::router())
        .merge(scores::router())
        .merge(channels::router())
        .merge(messages::router())
        .merge(triggers::router())
        .split_for_parts()
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
        .method_not_allowed_fallback(|| async {
            Error::bad_request("method_not_allowed", "this route does not accept that method")
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), track_http))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            Error::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .with_state(state)
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
