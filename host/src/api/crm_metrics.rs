//! `GET /v1/metrics/crm`: the program's metrics (acquisition, activity,
//! retention and churn, cohorts, repeat purchases, order value, lifetime
//! value, loyalty liability) per period, as JSON or CSV (see
//! `store/crm_metrics.rs` for the definitions and how they are computed).
//!
//! Roles: any tenant key.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::{Date, OffsetDateTime, Time};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Query};
use super::scores::ExportFormat;
use super::{ApiResult, AppState, Error};
use crate::store::crm_metrics::{CrmMetrics, Interval, MetricsRequest};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(crm_metrics))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// Start (inclusive): `YYYY-MM-DD` or RFC 3339, UTC; aligned down to its
    /// period's start. Default: a year before `to`.
    pub from: Option<String>,
    /// End (exclusive), same forms. Default: now.
    pub to: Option<String>,
    /// `month` (default), `week` (from Mondays) or `day`.
    pub interval: Option<Interval>,
    /// The scoring plugin whose stored scores are lifetime values (default `clv`).
    pub clv_plugin: Option<String>,
    /// What one loyalty point is worth, in major units (e.g. `0.01`): gives
    /// the loyalty liability's value.
    pub point_value: Option<f64>,
    /// `csv` for CSV (or `Accept: text/csv`); anything else JSON.
    pub format: Option<ExportFormat>,
}

fn parse_time(field: &str, text: &str) -> Result<OffsetDateTime, Error> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(text, rfc3339) {
        return Ok(t);
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, &date)
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc())
        .map_err(|_| Error::invalid(field, "expected YYYY-MM-DD or an RFC 3339 date-time"))
}

const CSV_HEADER: [&str; 13] = [
    "period_start",
    "period_end",
    "acquired",
    "active",
    "retained",
    "lost",
    "retention_rate",
    "churn_rate",
    "repeat_purchase_rate",
    "orders",
    "currency",
    "revenue",
    "average_order_value",
];

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One row per period and currency (a period without priced purchases has
/// one row, its currency columns empty).
fn csv(metrics: &CrmMetrics) -> anyhow::Result<Vec<u8>> {
    let rate = |r: Option<f64>| r.map(|v| v.to_string()).unwrap_or_default();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for p in &metrics.periods {
        let counts = [
            rfc3339(p.start),
            rfc3339(p.end),
            p.acquired.to_string(),
            p.active.to_string(),
            p.retained.to_string(),
            p.lost.to_string(),
            rate(p.retention_rate),
            rate(p.churn_rate),
            rate(p.repeat_purchase_rate),
            p.orders.to_string(),
        ];
        if p.revenue.is_empty() {
            w.write_record(counts.iter().map(String::as_str).chain(["", "", ""]))?;
        }
        for r in &p.revenue {
            w.write_record(counts.iter().map(String::as_str).chain([
                r.currency.as_str(),
                r.revenue.amount.as_str(),
                r.average_order_value.amount.as_str(),
            ]))?;
        }
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The program's metrics for the caller's tenant, per period of `[from,
/// to)`: customers acquired (first purchase), active (a purchase), retained
/// and lost against the previous period, retention and churn rates,
/// repeat-purchase rate, orders, revenue and average order value per
/// currency; cohort retention by first-purchase month; total and average
/// lifetime value (the clv plugin's stored scores); loyalty liability;
/// NPS (null: no satisfaction data yet). CSV (`format=csv` or `Accept:
/// text/csv`) has the periods, one row per period and currency.
#[utoipa::path(get, path = "/v1/metrics/crm", tag = "metrics", params(MetricsQuery),
    responses((status = 200, content((CrmMetrics = "application/json"), (String = "text/csv"))),
        (status = 422, description = "validation_failed: bad dates, `to` not after `from`, too many periods",
            body = ErrorBody)))]
async fn crm_metrics(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<Response> {
    let tenant = auth.read()?;
    let to = match &q.to {
        Some(text) => parse_time("to", text)?,
        None => OffsetDateTime::now_utc(),
    };
    let from = match &q.from {
        Some(text) => parse_time("from", text)?,
        None => to.checked_sub(time::Duration::days(365)).unwrap_or(to),
    };
    if q.point_value.is_some_and(|v| !v.is_finite() || v < 0.0) {
        return Err(Error::invalid("point_value", "a finite number, 0 or more"));
    }
    let clv_plugin = q.clv_plugin.unwrap_or_else(|| "clv".to_string());
    if clv_plugin.is_empty() || clv_plugin.len() > 200 {
        return Err(Error::invalid("clv_plugin", "1 to 200 characters"));
    }
    let request = MetricsRequest {
        from,
        to,
        interval: q.interval.unwrap_or(Interval::Month),
        clv_plugin,
        point_value: q.point_value,
    };
    let metrics = s.store.crm_metrics(&tenant, &request).await?;
    let as_csv = match q.format {
        Some(format) => format == ExportFormat::Csv,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv")),
    };
    if as_csv {
        let body = csv(&metrics).map_err(|e| Error::Internal(e.context("metrics CSV")))?;
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    Ok(Json(metrics).into_response())
}
