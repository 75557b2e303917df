//! Liveness (`/healthz`), readiness (`/readyz`: the database answers) and the
//! Prometheus scrape endpoint (`/metrics`). Unauthenticated by design: they
//! expose no tenant data and are what orchestrators and scrapers call.

use axum::Router;
use axum::extract::State;
use axum::http::header;
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

async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, Error> {
    state.store.db().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check: database unreachable");
        Error::Unavailable("database unreachable".into())
    })?;
    Ok(axum::Json(json!({ "status": "ready" })))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.plugins.refresh_gauges().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
