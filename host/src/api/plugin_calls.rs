//! Endpoints that run a tenant's plugins on demand: score a customer with
//! its scoring rules (optionally as of a past date), recommend products
//! with its cross-sell plugins, fit the cross-sell plugins; and what a
//! plugin learnt: its last fit and the entries it kept in its kv store.
//!
//! A plugin that fails (traps, times out, runs out of memory, returns
//! garbage) never fails the request: its entry in `results` carries the
//! error code and message, the other plugins' results stand, and the
//! failure counts towards the plugin's suspension for this tenant.
//! The exception is capacity: when the tenant's share of plugin capacity
//! stays full for a call's deadline, the whole request answers 429
//! `plugin_busy` with `Retry-After` (nothing was counted against anyone).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Auth, Json, Path, Query};
use super::{ApiResult, AppState, Error};
use crate::plugins::{PluginFailure, PluginRun, busy_retry_after};
use crate::runtime::contract::types;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(score_customer))
        .routes(routes!(recommendations))
        .routes(routes!(fit_cross_sell))
        .routes(routes!(plugin_fit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PluginQuery {
    /// Run only this plugin (it must be active for the tenant).
    pub plugin: Option<String>,
}

/// One plugin's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunReport {
    pub plugin: String,
    /// The plugin version that ran (the staged one for a customer in its
    /// share; empty when no version could be chosen).
    pub version: String,
    /// `ok` or `error`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PluginFailure>,
    pub duration_ms: f64,
    /// Fuel (≈ instructions) the call used, when metered.
    pub fuel_used: Option<u64>,
    /// Log lines the plugin wrote during the call (capped by its limits).
    #[schema(value_type = Vec<Object>)]
    pub logs: Vec<serde_json::Value>,
    pub logs_dropped: u32,
}

/// 429 `plugin_busy` when any run found no capacity for this tenant.
fn refuse_if_busy<T>(runs: &[PluginRun<T>]) -> ApiResult<()> {
    match busy_retry_after(runs) {
        Some(retry_after_ms) => Err(Error::PluginBusy { retry_after_ms }),
        None => Ok(()),
    }
}

fn report<T>(run: &PluginRun<T>) -> RunReport {
    RunReport {
        plugin: run.plugin.clone(),
        version: run.version.clone(),
        status: if run.result.is_ok() { "ok" } else { "error" },
        error: run.result.as_ref().err().cloned(),
        duration_ms: run.report.duration.as_secs_f64() * 1000.0,
        fuel_used: run.report.fuel_used,
        logs: run
            .report
            .logs
            .iter()
            .map(|l| serde_json::to_value(l).unwrap_or(serde_json::Value::Null))
            .collect(),
        logs_dropped: run.report.logs_dropped,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ScoreQuery {
    /// Run only this plugin (it must be active for the tenant).
    pub plugin: Option<String>,
    /// Score as of this RFC 3339 time: the plugins see it as "now" and none
    /// of the customer's later interactions (as a job with `as_of` does).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub as_of: Option<time::OffsetDateTime>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Score {
    pub value: f64,
    pub label: Option<String>,
    pub segment: Option<String>,
    pub explanation: String,
    #[schema(value_type = Object)]
    pub components: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreResult {
    #[serde(flatten)]
    pub run: RunReport,
    pub score: Option<Score>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreResponse {
    pub customer_id: String,
    /// The `as_of` asked for; `null`: scored as of now.
    #[serde(with = "time::serde::rfc3339::option")]
    pub as_of: Option<time::OffsetDateTime>,
    pub results: Vec<ScoreResult>,
}

fn score_out(s: &crate::runtime::contract::scoring::CustomerScore) -> Score {
    Score {
        value: s.value,
        label: s.label.clone(),
        segment: s.segment.clone(),
        explanation: s.explanation.clone(),
        components: s
            .components
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect(),
    }
}

/// Score a customer now with the tenant's active scoring plugins, as of now
/// or as of `as_of`. Nothing is stored. A write key: it runs the plugins,
/// and their failures count towards their suspension for the tenant, so a
/// read-only key must not trigger it.
#[utoipa::path(post, path = "/v1/customers/{id}/score", tag = "plugins",
    params(("id" = String, Path), ScoreQuery),
    responses((status = 200, body = ScoreResponse), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody),
              (status = 429, description = "plugin_busy: the tenant's share of plugin capacity is in use; retry after `Retry-After` seconds",
               body = super::error::ErrorBody, headers(("retry-after" = u64, description = "seconds")))))]
async fn score_customer(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<ScoreQuery>,
) -> ApiResult<Json<ScoreResponse>> {
    let tenant = auth.write()?;
    let runs = s
        .plugins
        .score_customer(&tenant, &id, q.plugin.as_deref(), q.as_of.map(crate::store::millis))
        .await?;
    refuse_if_busy(&runs)?;
    let results = runs
        .iter()
        .map(|run| ScoreResult {
            run: report(run),
            score: run.result.as_ref().ok().map(score_out),
        })
        .collect();
    Ok(Json(ScoreResponse {
        customer_id: id,
        as_of: q.as_of,
        results,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecommendQuery {
    /// Run only this plugin.
    pub plugin: Option<String>,
    /// Comma-separated SKUs of a basket to recommend against.
    pub basket: Option<String>,
    /// How many recommendations (1-100, default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recommendation {
    pub sku: String,
    pub score: f64,
    pub reason: String,
    /// Which plugin recommended it.
    pub plugin: String,
    /// The version of that plugin that recommended it.
    pub plugin_version: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendResponse {
    pub customer_id: String,
    /// Best first, one entry per SKU (the best-scoring plugin's).
    pub recommendations: Vec<Recommendation>,
    pub runs: Vec<RunReport>,
}

/// Recommend products for a customer (optionally for a basket).
#[utoipa::path(get, path = "/v1/customers/{id}/recommendations", tag = "plugins",
    params(("id" = String, Path), RecommendQuery),
    responses((status = 200, body = RecommendResponse), (status = 404, body = super::error::ErrorBody),
              (status = 429, description = "plugin_busy: the tenant's share of plugin capacity is in use; retry after `Retry-After` seconds",
               body = super::error::ErrorBody, headers(("retry-after" = u64, description = "seconds")))))]
async fn recommendations(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<RecommendQuery>,
) -> ApiResult<Json<RecommendResponse>> {
    let tenant = auth.read()?;
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(Error::invalid("limit", "must be 1 to 100"));
    }
    // A basket is SKUs only: prices come from the catalogue, not the caller.
    // A SKU the catalogue does not know still counts as "in the basket"
    // (its price is zero in ISO 4217 "XXX", no currency).
    let basket = match q.basket.as_deref() {
        None => None,
        Some(list) => {
            let skus: Vec<&str> = list.split(',').map(str::trim).filter(|sku| !sku.is_empty()).collect();
            if skus.len() > 100 {
                return Err(Error::invalid("basket", "at most 100 SKUs"));
            }
            let mut items = Vec::with_capacity(skus.len());
            for sku in skus {
                let unit_price = match s.store.get_product(&tenant, sku).await {
                    Ok(p) => types::Money {
                        currency: p.price.currency,
                        amount_minor: p.price.amount_minor,
                    },
                    Err(crate::store::StoreError::NotFound { .. }) => types::Money {
                        currency: "XXX".into(),
                        amount_minor: 0,
                    },
                    Err(e) => return Err(e.into()),
                };
                items.push(types::LineItem {
                    sku: sku.to_string(),
                    quantity: 1,
                    unit_price,
                });
            }
            Some(items)
        }
    };
    let runs = s
        .plugins
        .recommend(&tenant, &id, basket, limit, q.plugin.as_deref())
        .await?;
    refuse_if_busy(&runs)?;
    let mut best: std::collections::BTreeMap<String, Recommendation> = Default::default();
    for run in &runs {
        for r in run.result.as_ref().map(|v| v.as_slice()).unwrap_or_default() {
            let keep = best.get(&r.sku).is_none_or(|b| r.score > b.score);
            if keep && r.score.is_finite() {
                best.insert(
                    r.sku.clone(),
                    Recommendation {
                        sku: r.sku.clone(),
                        score: r.score,
                        reason: r.reason.clone(),
                        plugin: run.plugin.clone(),
                        plugin_version: run.version.clone(),
                    },
                );
            }
        }
    }
    let mut recommendations: Vec<Recommendation> = best.into_values().collect();
    recommendations.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.sku.cmp(&b.sku)));
    recommendations.truncate(limit as usize);
    Ok(Json(RecommendResponse {
        customer_id: id,
        recommendations,
        runs: runs.iter().map(report).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FitResult {
    #[serde(flatten)]
    pub run: RunReport,
    /// The plugin's summary of what it learnt: the JSON it returned, or
    /// `null` when the fit failed or its answer was not JSON.
    #[schema(value_type = Option<serde_json::Value>)]
    pub summary: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FitResponse {
    pub results: Vec<FitResult>,
}

/// Fit the tenant's cross-sell plugins on its purchase baskets (tenant admin).
#[utoipa::path(post, path = "/v1/cross-sell/fit", tag = "plugins", params(PluginQuery),
    responses((status = 200, body = FitResponse), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody),
              (status = 429, description = "plugin_busy: the tenant's share of plugin capacity is in use; retry after `Retry-After` seconds",
               body = super::error::ErrorBody, headers(("retry-after" = u64, description = "seconds")))))]
async fn fit_cross_sell(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<PluginQuery>,
) -> ApiResult<Json<FitResponse>> {
    let tenant = auth.admin()?;
    let runs = s.plugins.fit_cross_sell(&tenant, q.plugin.as_deref()).await?;
    refuse_if_busy(&runs)?;
    let results = runs
        .iter()
        .map(|run| FitResult {
            run: report(run),
            summary: run
                .result
                .as_ref()
                .ok()
                .map(|text| serde_json::from_str(text).unwrap_or(serde_json::Value::Null)),
        })
        .collect();
    Ok(Json(FitResponse { results }))
}

/// Most kv entries one page of `GET /v1/plugins/{id}/fit` returns.
pub const MAX_KV_PAGE: u32 = 100;
const DEFAULT_KV_PAGE: u32 = 20;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FitQuery {
    /// Key-value entries per page, 1-100 (default 20).
    pub limit: Option<u32>,
    /// `kv.next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// What a plugin learnt for the tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginFitView {
    pub plugin: String,
    /// Its last fit (by a scoring job, `POST /v1/cross-sell/fit`, ...):
    /// what the plugin returned, or why it failed; `null` if never fitted.
    pub fit: Option<crate::store::plugin_fits::PluginFit>,
    /// The entries it kept in its key-value store (its model, for a
    /// cross-sell plugin), in key order; JSON values are shown as JSON.
    pub kv: crate::store::Page<crate::store::plugin_fits::KvEntry>,
}

/// A plugin's last fit for the caller's tenant, with the key-value entries
/// it kept (paged). 404 if the tenant has no such plugin.
#[utoipa::path(get, path = "/v1/plugins/{id}/fit", tag = "plugins", params(("id" = String, Path), FitQuery),
    responses((status = 200, body = PluginFitView), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
async fn plugin_fit(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<FitQuery>,
) -> ApiResult<Json<PluginFitView>> {
    let tenant = auth.read()?;
    let limit = q.limit.unwrap_or(DEFAULT_KV_PAGE);
    if !(1..=MAX_KV_PAGE).contains(&limit) {
        return Err(Error::invalid("limit", format!("must be between 1 and {MAX_KV_PAGE}")));
    }
    let after = match &q.cursor {
        Some(c) => Some(crate::store::cursor::decode::<(String,)>(c)?.0),
        None => None,
    };
    if s.plugins.find(&tenant, &id).await?.is_none() {
        return Err(Error::NotFound("plugin"));
    }
    let fit = s.store.plugin_fit(&tenant, &id).await?;
    let limit = i64::from(limit);
    let mut items = s
        .store
        .plugin_kv_page(&tenant, &id, after.as_deref(), limit + 1)
        .await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|e| crate::store::cursor::encode(&(e.key.clone(),)))
    } else {
        None
    };
    Ok(Json(PluginFitView {
        plugin: id,
        fit,
        kv: crate::store::Page { items, next_cursor },
    }))
}
