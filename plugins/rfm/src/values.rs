//! A customer's raw RFM values over the window (now - window, now]:
//! whole days since the last purchase, number of purchases, total spend.

use serde::{Deserialize, Serialize};

use crate::input::{History, PurchaseAggregate};

/// Milliseconds in one day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// Raw recency, frequency and monetary values of a customer with at least
/// one purchase in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmValues {
    /// Whole days (rounded down) from the last purchase to now: 0 means
    /// within the last 24 hours.
    pub recency_days: i64,
    /// Purchases in the window (every purchase interaction counts).
    pub frequency: u32,
    /// Total amount of those purchases, minor units (missing amounts count
    /// as 0).
    pub monetary_minor: i64,
}

/// Start (exclusive) of the window ending at `now` (inclusive).
fn window_start(now: i64, window_days: u32) -> i64 {
    now.saturating_sub(i64::from(window_days).saturating_mul(MS_PER_DAY))
}

impl RfmValues {
    /// The values from a customer's history: interactions of kind
    /// `purchase_kind` with `now - window < occurred_at <= now`. `None`
    /// without a purchase in the window.
    pub fn from_history(history: &History, window_days: u32, purchase_kind: &str) -> Option<Self> {
        Self::from_purchases(
            history
                .interactions
                .iter()
                .filter(|i| i.kind == purchase_kind)
                .map(|i| (i.occurred_at, i.amount_minor)),
            history.now,
            window_days,
        )
    }

    /// The values from a customer's purchases, each `(occurred_at,
    /// amount_minor)`, in any order: those with `now - window <
    /// occurred_at <= now` count. `None` without a purchase in the window.
    /// [`RfmValues::from_history`] is this over the history's purchases;
    /// the component calls it on the SDK's history and on fit summaries
    /// directly, so that no intermediate history is built per customer.
    pub fn from_purchases(
        purchases: impl IntoIterator<Item = (i64, Option<i64>)>,
        now: i64,
        window_days: u32,
    ) -> Option<Self> {
        let start = window_start(now, window_days);
        let mut last: Option<i64> = None;
        let mut frequency: u32 = 0;
        let mut monetary: i64 = 0;
        for (at, amount_minor) in purchases {
            if at <= start || at > now {
                continue;
            }
            last = Some(last.map_or(at, |l| l.max(at)));
            frequency = frequency.saturating_add(1);
            monetary = monetary.saturating_add(amount_minor.unwrap_or(0));
        }
        Some(RfmValues {
            recency_days: (now - last?).div_euclid(MS_PER_DAY),
            frequency,
            monetary_minor: monetary,
        })
    }

    /// The values from a purchase aggregate. The recency test is
    /// exact (last purchase inside the window); `purchases` and
    /// `total_spend_minor` are taken as the window's, which is exact when
    /// the aggregate covers the window, or when the customer's first
    /// purchase is inside it. `None` without a purchase in the window.
    pub fn from_summary(summary: &PurchaseAggregate, now: i64, window_days: u32) -> Option<Self> {
        let last = summary.last_purchase_at?;
        if summary.purchases == 0 || last <= window_start(now, window_days) || last > now {
            return None;
        }
        Some(RfmValues {
            recency_days: (now - last).div_euclid(MS_PER_DAY),
            frequency: summary.purchases,
            monetary_minor: summary.total_spend_minor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Interaction;

    const DAY: i64 = MS_PER_DAY;

    fn event(kind: &str, at: i64, amount: Option<i64>) -> Interaction {
        Interaction {
            kind: kind.into(),
            occurred_at: at,
            amount_minor: amount,
        }
    }

    #[test]
    fn only_purchases_inside_the_window_count() {
        let now = 1000 * DAY;
        let history = History {
            customer: "c".into(),
            interactions: vec![
                event("purchase", now - 30 * DAY, Some(500)), // exactly at the start: out
                event("purchase", now - 30 * DAY + 1, Some(700)),
                event("purchase", now - 3 * DAY - 1, None),
                event("visit", now - DAY, Some(9999)),
                event("purchase", now - 2 * DAY - 5, Some(300)),
                event("purchase", now + 1, Some(100)), // in the future: out
            ],
            now,
        };
        let v = RfmValues::from_history(&history, 30, "purchase").unwrap();
        assert_eq!(
            v,
            RfmValues {
                recency_days: 2,
                frequency: 3,
                monetary_minor: 1000
            }
        );
        assert_eq!(RfmValues::from_history(&history, 1, "purchase"), None);
    }

    #[test]
    fn summaries_count_when_the_last_purchase_is_in_the_window() {
        let now = 1000 * DAY;
        let mut s = PurchaseAggregate {
            customer_id: "c".into(),
            purchases: 4,
            first_purchase_at: Some(now - 100 * DAY),
            last_purchase_at: Some(now - 10 * DAY - 1),
            total_spend_minor: 12_345,
            created_at: 0,
        };
        assert_eq!(
            RfmValues::from_summary(&s, now, 365),
            Some(RfmValues {
                recency_days: 10,
                frequency: 4,
                monetary_minor: 12_345
            })
        );
        assert_eq!(RfmValues::from_summary(&s, now, 10), None);
        s.last_purchase_at = None;
        assert_eq!(RfmValues::from_summary(&s, now, 365), None);
    }
}
