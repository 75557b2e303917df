//! Store: the program's metrics (`GET /v1/metrics/crm`): per period,
//! customers acquired, active, retained and lost, repeat-purchase rate,
//! orders and average order value; cohort retention by first-purchase
//! month; the lifetime value stored by the clv plugin; loyalty liability.
//!
//! Computed in the database, and never by scanning the tenant: the period
//! figures read only the purchases inside the asked range (the
//! `interactions_kind` index, tenant + kind + time), and each buyer's first
//! purchase from that buyer's own timeline (`interactions_timeline`; the
//! `kind || ''` keeps SQLite off the kind index, which would read every
//! purchase of the tenant). The two tenant-wide totals (lifetime value,
//! loyalty liability) are sums over a covering index (`customer_scores_value`,
//! `loyalty_accounts_balance`): an index-only read, no table row.
//! [`Store::crm_metrics_plans`] returns SQLite's plans of these queries, and
//! a test checks that none scans a table.

use serde::Serialize;
use sqlx::Row;
use time::{Date, Duration, Month, OffsetDateTime, Time};
use utoipa::ToSchema;

use super::money::{Money, exact_sum, exact_sum_sql, saturate};
use super::{Store, StoreError, StoreResult, TenantId, from_millis, millis};

/// Most periods in one answer (a day interval over ~2.7 years).
pub const MAX_PERIODS: usize = 1_000;
/// Most first-purchase months in the cohort table (20 years).
const MAX_COHORT_MONTHS: usize = 240;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Day,
    Week,
    Month,
}

/// What to compute.
#[derive(Debug, Clone)]
pub struct MetricsRequest {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub interval: Interval,
    /// The scoring plugin whose stored score is a lifetime value.
    pub clv_plugin: String,
    /// What one loyalty point is worth (major units), for the liability's value.
    pub point_value: Option<f64>,
}

/// Orders and revenue of one currency in one period.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CurrencyFigures {
    pub currency: String,
    /// Purchases with an amount.
    pub orders: i64,
    pub revenue: Money,
    /// `revenue / orders`, rounded down to the minor unit.
    pub average_order_value: Money,
}

/// One period's figures. A customer is *active* in a period if they made a
/// purchase in it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PeriodMetrics {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Exclusive.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// Customers whose first purchase ever falls in the period.
    pub acquired: i64,
    pub active: i64,
    /// Active in the previous period and in this one.
    pub retained: i64,
    /// Active in the previous period, not in this one.
    pub lost: i64,
    /// `retained` / customers active in the previous period (null if none).
    pub retention_rate: Option<f64>,
    /// `lost` / customers active in the previous period (null if none).
    pub churn_rate: Option<f64>,
    /// Share of the period's active customers with at least two purchases
    /// by the period's end (null if none active).
    pub repeat_purchase_rate: Option<f64>,
    /// Purchases in the period (with or without an amount).
    pub orders: i64,
    /// Revenue and average order value, per currency.
    pub revenue: Vec<CurrencyFigures>,
}

/// Customers whose first purchase fell in one month, and how many of them
/// bought again in each month after.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Cohort {
    /// The first day of the first-purchase month.
    #[serde(with = "time::serde::rfc3339")]
    pub month: OffsetDateTime,
    pub customers: i64,
    /// Customers active in month k after the first (k = 0 is the first
    /// month itself, always all of them), up to the range's end.
    pub active: Vec<i64>,
    /// `active[k] / customers`: the retention curve.
    pub retention: Vec<f64>,
}

/// Lifetime value from the clv plugin's stored scores.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LifetimeValue {
    pub plugin: String,
    /// Customers with a stored score.
    pub customers: i64,
    /// Sum of the scores (major units of the customers' currency).
    pub total: f64,
    /// `total / customers`.
    pub average: f64,
}

/// Points owed to customers.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LoyaltyLiability {
    pub accounts: i64,
    /// Sum of the accounts' balances.
    pub outstanding_points: i64,
    /// `outstanding_points * point_value`, when `point_value` was given.
    pub value: Option<f64>,
}

/// The program's metrics for a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CrmMetrics {
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub interval: Interval,
    pub periods: Vec<PeriodMetrics>,
    /// By first-purchase month, for the months of the range.
    pub cohorts: Vec<Cohort>,
    /// Null when the plugin has stored no score.
    pub lifetime_value: Option<LifetimeValue>,
    pub loyalty_liability: LoyaltyLiability,
    /// Net promoter score of the range's NPS answers (-100 to 100, to 0.1);
    /// null without answers.
    pub nps: Option<f64>,
}

fn midnight(date: Date) -> OffsetDateTime {
    date.with_time(Time::MIDNIGHT).assume_utc()
}

fn month_start(t: OffsetDateTime) -> OffsetDateTime {
    midnight(t.date().replace_day(1).unwrap_or(t.date()))
}

fn next_month(t: OffsetDateTime) -> OffsetDateTime {
    let (year, month) = match t.month() {
        Month::December => (t.year() + 1, Month::January),
        m => (t.year(), m.next()),
    };
    Date::from_calendar_date(year, month, 1).map_or(LATEST, midnight)
}

/// The last representable instant: where steps past year 9999 stop (the
/// caller clips every period to `to`, so the walk ends there).
const LATEST: OffsetDateTime = time::PrimitiveDateTime::MAX.assume_utc();
const EARLIEST: OffsetDateTime = time::PrimitiveDateTime::MIN.assume_utc();

fn plus(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.checked_add(d).unwrap_or(LATEST)
}

fn minus(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.checked_sub(d).unwrap_or(EARLIEST)
}

/// The start of the period holding `t`.
fn align(t: OffsetDateTime, interval: Interval) -> OffsetDateTime {
    match interval {
        Interval::Day => midnight(t.date()),
        Interval::Week => minus(
            midnight(t.date()),
            Duration::days(i64::from(t.weekday().number_days_from_monday())),
        ),
        Interval::Month => month_start(t),
    }
}

fn step(t: OffsetDateTime, interval: Interval) -> OffsetDateTime {
    match interval {
        Interval::Day => plus(t, Duration::days(1)),
        Interval::Week => plus(t, Duration::weeks(1)),
        Interval::Month => next_month(t),
    }
}

/// The periods covering `[from, to)`, `from` aligned down to its period's
/// start and the last one clipped to `to`, preceded by the period before
/// (index 0: only the reference for retention).
fn periods(from: OffsetDateTime, to: OffsetDateTime, interval: Interval) -> StoreResult<Vec<(i64, i64)>> {
    let first = align(from, interval);
    let before = match interval {
        Interval::Day => minus(first, Duration::days(1)),
        Interval::Week => minus(first, Duration::weeks(1)),
        Interval::Month => month_start(minus(first, Duration::days(1))),
    };
    let mut out = vec![(millis(before), millis(first))];
    let mut start = first;
    while start < to {
        if out.len() > MAX_PERIODS {
            return Err(StoreError::invalid(
                "interval",
                format!("at most {MAX_PERIODS} periods: use a longer interval or a shorter range"),
            ));
        }
        let end = step(start, interval).min(to);
        out.push((millis(start), millis(end)));
        start = end;
    }
    Ok(out)
}

/// `(idx, ps, pe)` rows as SQL text: the numbers are the server's own
/// integers (no input text reaches the query).
fn values(periods: &[(i64, i64)]) -> String {
    periods
        .iter()
        .enumerate()
        .map(|(i, (s, e))| format!("({i}, {s}, {e})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each buyer of `act` with their first purchase ever, read from their
/// own timeline (see the module doc for `kind || ''`). `MATERIALIZED`
/// (SQLite 3.35, PostgreSQL 12) so it is read once per buyer, not once per
/// reference to it in the outer query.
const FIRSTS: &str = "firsts AS MATERIALIZED (SELECT c.customer_id AS customer_id, \
       (SELECT MIN(j.occurred_at) FROM interactions j WHERE j.tenant_id = $1 AND j.customer_id = c.customer_id \
        AND j.kind || '' = 'purchase') AS first_at \
     FROM (SELECT DISTINCT customer_id FROM act) c)";

fn period_sql(periods: &[(i64, i64)]) -> String {
    format!(
        "WITH periods(idx, ps, pe) AS (VALUES {}), \
         act AS (SELECT p.idx AS idx, i.customer_id AS customer_id, COUNT(*) AS n FROM periods p \
           JOIN interactions i ON i.tenant_id = $1 AND i.kind = 'purchase' \
           AND i.occurred_at >= p.ps AND i.occurred_at < p.pe GROUP BY p.idx, i.customer_id), \
         {FIRSTS} \
         SELECT CAST(p.idx AS BIGINT) AS idx, CAST(COUNT(a.customer_id) AS BIGINT) AS active, \
           CAST(COALESCE(SUM(CASE WHEN f.first_at >= p.ps THEN 1 ELSE 0 END), 0) AS BIGINT) AS acquired, \
           CAST(COALESCE(SUM(CASE WHEN f.first_at < p.ps OR a.n >= 2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS repeaters, \
           CAST(COALESCE(SUM(CASE WHEN prev.customer_id IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS retained, \
           CAST(COALESCE(SUM(a.n), 0) AS BIGINT) AS orders \
         FROM periods p LEFT JOIN act a ON a.idx = p.idx \
           LEFT JOIN firsts f ON f.customer_id = a.customer_id \
           LEFT JOIN act prev ON prev.idx = p.idx - 1 AND prev.customer_id = a.customer_id \
         GROUP BY p.idx ORDER BY p.idx",
        values(periods)
    )
}

fn revenue_sql(periods: &[(i64, i64)]) -> String {
    format!(
        "WITH periods(idx, ps, pe) AS (VALUES {}) \
         SELECT CAST(p.idx AS BIGINT) AS idx, i.currency AS currency, CAST(COUNT(*) AS BIGINT) AS orders, {} \
         FROM periods p JOIN interactions i ON i.tenant_id = $1 AND i.kind = 'purchase' \
           AND i.occurred_at >= p.ps AND i.occurred_at < p.pe AND i.amount_minor IS NOT NULL \
         GROUP BY p.idx, i.currency ORDER BY 1, 2",
        values(periods),
        exact_sum_sql("i.amount_minor", "revenue")
    )
}

fn cohort_sql(months: &[(i64, i64)]) -> String {
    format!(
        "WITH months(idx, ps, pe) AS (VALUES {}), \
         act AS (SELECT DISTINCT m.idx AS idx, i.customer_id AS customer_id FROM months m \
           JOIN interactions i ON i.tenant_id = $1 AND i.kind = 'purchase' \
           AND i.occurred_at >= m.ps AND i.occurred_at < m.pe), \
         {FIRSTS}, \
         cohort AS (SELECT f.customer_id AS customer_id, m.idx AS cidx FROM firsts f \
           JOIN months m ON f.first_at >= m.ps AND f.first_at < m.pe) \
         SELECT CAST(c.cidx AS BIGINT) AS cidx, CAST(a.idx AS BIGINT) AS idx, CAST(COUNT(*) AS BIGINT) AS n \
         FROM cohort c JOIN act a ON a.customer_id = c.customer_id \
         GROUP BY c.cidx, a.idx ORDER BY c.cidx, a.idx",
        values(months)
    )
}

const CLV_SQL: &str = "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(SUM(value), 0.0) AS DOUBLE PRECISION) AS total \
                       FROM customer_scores WHERE tenant_id = $1 AND plugin_id = $2";
const LIABILITY_SQL: &str = "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(SUM(balance), 0) AS BIGINT) AS points \
                             FROM loyalty_accounts WHERE tenant_id = $1";

fn rate(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The first-purchase months of the range, as periods.
fn months(from: OffsetDateTime, to: OffsetDateTime) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = month_start(from);
    while start < to && out.len() < MAX_COHORT_MONTHS {
        let end = next_month(start).min(to);
        out.push((millis(start), millis(end)));
        start = end;
    }
    out
}

impl Store {
    /// The program's metrics of a tenant over `[from, to)`.
    pub async fn crm_metrics(&self, tenant: &TenantId, req: &MetricsRequest) -> StoreResult<CrmMetrics> {
        if req.from >= req.to {
            return Err(StoreError::invalid("to", "must be after from"));
        }
        let periods = periods(req.from, req.to, req.interval)?;
        let mut conn = self.db().pool().acquire().await?;
        let rows = sqlx::query(&period_sql(&periods))
            .bind(tenant.as_str())
            .fetch_all(&mut *conn)
            .await?;
        let mut out: Vec<PeriodMetrics> = Vec::with_capacity(periods.len());
        let mut previous_active = 0;
        for row in &rows {
            let idx: i64 = row.try_get("idx")?;
            let active: i64 = row.try_get("active")?;
            let Some(&(ps, pe)) = usize::try_from(idx).ok().and_then(|i| periods.get(i)) else {
                return Err(StoreError::Corrupt(format!("metrics period {idx} out of range")));
            };
            if idx > 0 {
                let retained: i64 = row.try_get("retained")?;
                let lost = previous_active - retained;
                out.push(PeriodMetrics {
                    start: from_millis(ps),
                    end: from_millis(pe),
                    acquired: row.try_get("acquired")?,
                    active,
                    retained,
                    lost,
                    retention_rate: rate(retained, previous_active),
                    churn_rate: rate(lost, previous_active),
                    repeat_purchase_rate: rate(row.try_get("repeaters")?, active),
                    orders: row.try_get("orders")?,
                    revenue: Vec::new(),
                });
            }
            previous_active = active;
        }
        let revenue = sqlx::query(&revenue_sql(&periods))
            .bind(tenant.as_str())
            .fetch_all(&mut *conn)
            .await?;
        for row in &revenue {
            let idx: i64 = row.try_get("idx")?;
            let Some(period) = usize::try_from(idx - 1).ok().and_then(|i| out.get_mut(i)) else {
                continue; // the reference period before the range
            };
            let currency: String = row.try_get("currency")?;
            let orders: i64 = row.try_get("orders")?;
            let total = saturate(exact_sum(row, "revenue")?);
            period.revenue.push(CurrencyFigures {
                revenue: Money::stored(&currency, total)?,
                average_order_value: Money::stored(&currency, if orders > 0 { total / orders } else { 0 })?,
                currency,
                orders,
            });
        }
        let cohorts = self.cohorts(&mut conn, tenant, req.from, req.to).await?;
        // (`DOUBLE PRECISION` has REAL affinity in SQLite: one text for both.)
        let clv = sqlx::query(CLV_SQL)
            .bind(tenant.as_str())
            .bind(&req.clv_plugin)
            .fetch_one(&mut *conn)
            .await?;
        let clv_customers: i64 = clv.try_get("n")?;
        let clv_total: f64 = clv.try_get("total")?;
        let liability = sqlx::query(LIABILITY_SQL)
            .bind(tenant.as_str())
            .fetch_one(&mut *conn)
            .await?;
        let points: i64 = liability.try_get("points")?;
        let nps = super::satisfaction::nps_counts(&mut conn, tenant, req.from, req.to).await?;
        Ok(CrmMetrics {
            from: req.from,
            to: req.to,
            interval: req.interval,
            periods: out,
            cohorts,
            lifetime_value: (clv_customers > 0).then(|| LifetimeValue {
                plugin: req.clv_plugin.clone(),
                customers: clv_customers,
                total: clv_total,
                average: clv_total / clv_customers as f64,
            }),
            loyalty_liability: LoyaltyLiability {
                accounts: liability.try_get("n")?,
                outstanding_points: points,
                value: req.point_value.map(|v| points as f64 * v),
            },
            nps: nps.nps,
        })
    }

    async fn cohorts(
        &self,
        conn: &mut sqlx::AnyConnection,
        tenant: &TenantId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> StoreResult<Vec<Cohort>> {
        let months = months(from, to);
        let rows = sqlx::query(&cohort_sql(&months))
            .bind(tenant.as_str())
            .fetch_all(&mut *conn)
            .await?;
        let mut cohorts: Vec<Cohort> = months
            .iter()
            .enumerate()
            .map(|(i, (start, _))| Cohort {
                month: from_millis(*start),
                customers: 0,
                active: vec![0; months.len() - i],
                retention: Vec::new(),
            })
            .collect();
        for row in &rows {
            let cidx: i64 = row.try_get("cidx")?;
            let idx: i64 = row.try_get("idx")?;
            let n: i64 = row.try_get("n")?;
            let cohort = usize::try_from(cidx).ok().and_then(|c| cohorts.get_mut(c));
            let offset = usize::try_from(idx - cidx).ok();
            if let (Some(cohort), Some(k)) = (cohort, offset)
                && let Some(slot) = cohort.active.get_mut(k)
            {
                *slot = n;
            }
        }
        for cohort in &mut cohorts {
            cohort.customers = cohort.active.first().copied().unwrap_or(0);
            cohort.retention = cohort
                .active
                .iter()
                .map(|&a| rate(a, cohort.customers).unwrap_or(0.0))
                .collect();
        }
        Ok(cohorts)
    }

    /// SQLite's query plans of the metrics' queries (`EXPLAIN QUERY PLAN`
    /// detail lines), for the test that checks they read through indexes and
    /// for the README. Empty on PostgreSQL, whose planner picks by table
    /// statistics (see the README for its plans on a large tenant).
    pub async fn crm_metrics_plans(&self, tenant: &TenantId, req: &MetricsRequest) -> StoreResult<Vec<String>> {
        if self.db().backend() != crate::db::Backend::Sqlite {
            return Ok(Vec::new());
        }
        let periods = periods(req.from, req.to, req.interval)?;
        let months = months(req.from, req.to);
        let mut plans = Vec::new();
        for (sql, plugin) in [
            (period_sql(&periods), None),
            (revenue_sql(&periods), None),
            (cohort_sql(&months), None),
            (CLV_SQL.to_string(), Some(req.clv_plugin.as_str())),
            (LIABILITY_SQL.to_string(), None),
        ] {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut q = sqlx::query(&explain).bind(tenant.as_str());
            if let Some(p) = plugin {
                q = q.bind(p);
            }
            for row in q.fetch_all(self.db().pool()).await? {
                plans.push(row.try_get::<String, _>("detail")?);
            }
            plans.push(String::new());
        }
        Ok(plans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn periods_align_and_clip() {
        let p = periods(
            datetime!(2024-01-15 0:00 UTC),
            datetime!(2024-03-10 0:00 UTC),
            Interval::Month,
        )
        .unwrap();
        let starts: Vec<_> = p.iter().map(|(s, _)| from_millis(*s)).collect();
        assert_eq!(
            starts,
            [
                datetime!(2023-12-01 0:00 UTC),
                datetime!(2024-01-01 0:00 UTC),
                datetime!(2024-02-01 0:00 UTC),
                datetime!(2024-03-01 0:00 UTC)
            ]
        );
        assert_eq!(from_millis(p[3].1), datetime!(2024-03-10 0:00 UTC));
        // 2024-01-03 is a Wednesday: its week starts on Monday the 1st.
        let w = periods(
            datetime!(2024-01-03 0:00 UTC),
            datetime!(2024-01-09 0:00 UTC),
            Interval::Week,
        )
        .unwrap();
        assert_eq!(from_millis(w[1].0), datetime!(2024-01-01 0:00 UTC));
        assert_eq!(w.len(), 3);
        assert!(
            periods(
                datetime!(2000-01-01 0:00 UTC),
                datetime!(2010-01-01 0:00 UTC),
                Interval::Day
            )
            .is_err()
        );
    }
}
