//! Store: satisfaction answers (CSAT 1-5, NPS 0-10). An answer is an
//! interaction of the built-in kind `satisfaction` (from the API or a
//! channel connector's inbound event) whose payload is
//! `{"survey": "csat" | "nps", "score": n, ...}`; ingest validates it and
//! copies the survey and score to `satisfaction_answers`, so a customer's
//! history and the tenant's NPS over time are indexed reads. Free text
//! (a comment) stays in the interaction's payload, where GDPR erasure
//! clears it.
//!
//! NPS of a period = % promoters (9-10) - % detractors (0-6) of the NPS
//! answers made in it, rounded to 0.1; no answers, no NPS (null).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AnyConnection, Row};
use time::{Date, Month, OffsetDateTime};
use utoipa::ToSchema;

use super::customers::get_customer_tx;
use super::interactions::Interaction;
use super::{Store, StoreError, StoreResult, TenantId, from_millis, millis};

/// Largest number of periods one NPS request may cover.
pub const MAX_NPS_PERIODS: usize = 400;
/// Largest number of answers `GET /v1/customers/{id}/satisfaction` returns.
pub const MAX_HISTORY: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Survey {
    /// Customer satisfaction, 1 (very unsatisfied) to 5 (very satisfied).
    Csat,
    /// Net Promoter Score question, 0 to 10.
    Nps,
}

impl Survey {
    fn as_str(self) -> &'static str {
        match self {
            Survey::Csat => "csat",
            Survey::Nps => "nps",
        }
    }
    fn range(self) -> (i64, i64) {
        match self {
            Survey::Csat => (1, 5),
            Survey::Nps => (0, 10),
        }
    }
}

/// One answer, as a customer's satisfaction history lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SatisfactionAnswer {
    /// The `satisfaction` interaction's id.
    pub interaction_id: String,
    pub survey: Survey,
    pub score: i64,
    /// The payload's `comment`, when there is one (and the customer is not erased).
    pub comment: Option<String>,
    pub channel: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}

/// The payload of a `satisfaction` interaction, checked.
fn parse_answer(payload: &Value) -> StoreResult<(Survey, i64)> {
    let survey = match payload.get("survey").and_then(Value::as_str) {
        Some("csat") => Survey::Csat,
        Some("nps") => Survey::Nps,
        _ => {
            return Err(StoreError::invalid(
                "payload.survey",
                "a satisfaction answer needs \"survey\": \"csat\" or \"nps\"",
            ));
        }
    };
    let (lo, hi) = survey.range();
    let score = payload
        .get("score")
        .and_then(Value::as_i64)
        .filter(|s| (lo..=hi).contains(s))
        .ok_or_else(|| {
            StoreError::invalid(
                "payload.score",
                format!(
                    "a {} answer's score must be an integer from {lo} to {hi}",
                    survey.as_str()
                ),
            )
        })?;
    if payload.get("comment").is_some_and(|c| !c.is_string()) {
        return Err(StoreError::invalid("payload.comment", "must be a string"));
    }
    Ok((survey, score))
}

/// Validates and records the answer of a new `satisfaction` interaction.
pub(super) async fn record_answer_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    interaction: &Interaction,
) -> StoreResult<()> {
    let (survey, score) = parse_answer(&interaction.payload)?;
    sqlx::query(
        "INSERT INTO satisfaction_answers (tenant_id, id, customer_id, survey, score, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.as_str())
    .bind(&interaction.id)
    .bind(&interaction.customer_id)
    .bind(survey.as_str())
    .bind(score)
    .bind(millis(interaction.occurred_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The length of an NPS period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Day,
    Week,
    Month,
}

/// One period's NPS.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NpsPeriod {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    pub responses: i64,
    pub promoters: i64,
    pub passives: i64,
    pub detractors: i64,
    /// -100 to 100, rounded to 0.1; null without answers.
    pub nps: Option<f64>,
}

/// The tenant's NPS over `[from, to)`, per period and overall.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NpsReport {
    pub interval: Interval,
    pub periods: Vec<NpsPeriod>,
    pub total: NpsPeriod,
}

/// NPS from counts: % promoters - % detractors, to 0.1.
pub fn nps(responses: i64, promoters: i64, detractors: i64) -> Option<f64> {
    if responses <= 0 {
        return None;
    }
    let raw = 100.0 * (promoters - detractors) as f64 / responses as f64;
    Some((raw * 10.0).round() / 10.0)
}

/// The starts of the periods covering `[from, to)`: `from` itself, then
/// every `interval` after it (months by calendar: the same day and time, or
/// the month's last day when it is shorter), and `to` last.
fn period_bounds(from: OffsetDateTime, to: OffsetDateTime, interval: Interval) -> StoreResult<Vec<OffsetDateTime>> {
    let mut bounds = vec![from];
    let mut k = 1u32;
    loop {
        let next = match interval {
            Interval::Day => from + time::Duration::days(i64::from(k)),
            Interval::Week => from + time::Duration::weeks(i64::from(k)),
            Interval::Month => add_months(from, k)?,
        };
        if next >= to {
            bounds.push(to);
            return Ok(bounds);
        }
        bounds.push(next);
        if bounds.len() > MAX_NPS_PERIODS {
            return Err(StoreError::invalid(
                "interval",
                format!("at most {MAX_NPS_PERIODS} periods per request; use a longer interval"),
            ));
        }
        k += 1;
    }
}

fn add_months(t: OffsetDateTime, k: u32) -> StoreResult<OffsetDateTime> {
    let months = i64::from(t.month() as u8) - 1 + i64::from(k);
    let year =
        i32::try_from(i64::from(t.year()) + months / 12).map_err(|_| StoreError::invalid("to", "out of range"))?;
    let month = Month::try_from((months % 12) as u8 + 1).map_err(|_| StoreError::invalid("to", "out of range"))?;
    let last = month.length(year);
    let date = Date::from_calendar_date(year, month, t.day().min(last))
        .map_err(|_| StoreError::invalid("to", "out of range"))?;
    Ok(t.replace_date(date))
}

/// Promoters, passives and detractors among the NPS answers of
/// `[start, end)`; also the program's metrics' NPS.
pub(crate) async fn nps_counts(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> StoreResult<NpsPeriod> {
    // One indexed range per period (satisfaction_answers_survey).
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, \
           CAST(COALESCE(SUM(CASE WHEN score >= 9 THEN 1 ELSE 0 END), 0) AS BIGINT) AS promoters, \
           CAST(COALESCE(SUM(CASE WHEN score <= 6 THEN 1 ELSE 0 END), 0) AS BIGINT) AS detractors \
         FROM satisfaction_answers WHERE tenant_id = $1 AND survey = 'nps' AND occurred_at >= $2 AND occurred_at < $3",
    )
    .bind(tenant.as_str())
    .bind(millis(start))
    .bind(millis(end))
    .fetch_one(&mut *conn)
    .await?;
    let responses: i64 = row.try_get("n")?;
    let promoters: i64 = row.try_get("promoters")?;
    let detractors: i64 = row.try_get("detractors")?;
    Ok(NpsPeriod {
        start,
        end,
        responses,
        promoters,
        passives: responses - promoters - detractors,
        detractors,
        nps: nps(responses, promoters, detractors),
    })
}

impl Store {
    /// A customer's answers, newest first (at most `limit`, default 100).
    pub async fn customer_satisfaction(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        limit: Option<u32>,
    ) -> StoreResult<Vec<SatisfactionAnswer>> {
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > MAX_HISTORY {
            return Err(StoreError::invalid("limit", format!("must be 1 to {MAX_HISTORY}")));
        }
        let mut conn = self.db().pool().acquire().await?;
        get_customer_tx(&mut conn, tenant, customer_id).await?;
        let rows = sqlx::query(
            "SELECT a.id, a.survey, a.score, a.occurred_at, i.channel, i.payload FROM satisfaction_answers a \
             JOIN interactions i ON i.tenant_id = a.tenant_id AND i.id = a.id \
             WHERE a.tenant_id = $1 AND a.customer_id = $2 ORDER BY a.occurred_at DESC, a.id DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|row| {
                let survey: String = row.try_get("survey")?;
                let payload: String = row.try_get("payload")?;
                let comment = super::json_column(&payload)?
                    .get("comment")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Ok(SatisfactionAnswer {
                    interaction_id: row.try_get("id")?,
                    survey: if survey == "csat" { Survey::Csat } else { Survey::Nps },
                    score: row.try_get("score")?,
                    comment,
                    channel: row.try_get("channel")?,
                    occurred_at: from_millis(row.try_get("occurred_at")?),
                })
            })
            .collect()
    }

    /// The tenant's NPS over `[from, to)` per `interval`, and overall.
    pub async fn nps_over_time(
        &self,
        tenant: &TenantId,
        from: OffsetDateTime,
        to: OffsetDateTime,
        interval: Interval,
    ) -> StoreResult<NpsReport> {
        if to <= from {
            return Err(StoreError::invalid("to", "must be after from"));
        }
        let bounds = period_bounds(from, to, interval)?;
        let mut conn = self.db().pool().acquire().await?;
        let mut periods = Vec::with_capacity(bounds.len() - 1);
        for pair in bounds.windows(2) {
            periods.push(nps_counts(&mut conn, tenant, pair[0], pair[1]).await?);
        }
        let total = nps_counts(&mut conn, tenant, from, to).await?;
        Ok(NpsReport {
            interval,
            periods,
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_checked() {
        assert_eq!(
            parse_answer(&json!({"survey": "nps", "score": 0})).unwrap(),
            (Survey::Nps, 0)
        );
        assert_eq!(
            parse_answer(&json!({"survey": "csat", "score": 5})).unwrap(),
            (Survey::Csat, 5)
        );
        assert!(parse_answer(&json!({"survey": "csat", "score": 0})).is_err());
        assert!(parse_answer(&json!({"survey": "nps", "score": 11})).is_err());
        assert!(parse_answer(&json!({"survey": "nps", "score": 7.5})).is_err());
        assert!(parse_answer(&json!({"survey": "ces", "score": 3})).is_err());
        assert!(parse_answer(&json!({"survey": "nps", "score": 3, "comment": 1})).is_err());
    }

    #[test]
    fn nps_rounds_and_months_clamp() {
        assert_eq!(nps(3, 1, 1), Some(0.0));
        assert_eq!(nps(3, 2, 0), Some(66.7));
        assert_eq!(nps(0, 0, 0), None);
        let jan31 = time::macros::datetime!(2026-01-31 00:00 UTC);
        assert_eq!(
            add_months(jan31, 1).unwrap(),
            time::macros::datetime!(2026-02-28 00:00 UTC)
        );
        assert_eq!(
            add_months(jan31, 12).unwrap(),
            time::macros::datetime!(2027-01-31 00:00 UTC)
        );
    }
}
