//! Liveness (`/healthz`), readiness (`/readyz`: the database answers and
//! every plugin of the manifest is loaded or marked unavailable) and the
//! Prometheus scrape endpoint (`/metrics`). Unauthenticated by design: they
//! expose no tenant data and are what orchestrators and scrapers call.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::{AppState, Error};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(state): State<AppState>) -> Result<axum::response::Response, Error> {
    state.store.db().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check: database unreachable");
        Error::Unavailable("database unreachable".into())
    })?;
    // Plugins compile in the background after start-up (and after a
    // reload); a node is not ready while a first call would wait for one.
    let pending = state.plugins.pending();
    if !pending.is_empty() {
        let body = json!({ "error": {
            "code": "unavailable",
            "message": format!("{} plugin(s) still loading", pending.len()),
            "details": { "pending": pending },
        }});
        return Ok((StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response());
    }
    Ok(axum::Json(json!({ "status": "ready" })).into_response())
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.plugins.refresh_gauges().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
