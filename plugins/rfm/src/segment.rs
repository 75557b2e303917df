//! The named RFM segments and the map from scores to segment.
//!
//! The map is the widely used 5×5 grid on R and FM, where FM is the average
//! of F and M rounded half up (FM = ⌈(F + M) / 2⌉), with the grid's bottom
//! corner split by recency into Lost (R = 1) and Hibernating (R = 2):
//!
//! | R \ FM | 1              | 2                  | 3                  | 4               | 5               |
//! |--------|----------------|--------------------|--------------------|-----------------|-----------------|
//! | 5      | New Customers  | Potential Loyalist | Potential Loyalist | Champions       | Champions       |
//! | 4      | Promising      | Potential Loyalist | Potential Loyalist | Loyal Customers | Loyal Customers |
//! | 3      | About To Sleep | About To Sleep     | Need Attention     | Loyal Customers | Loyal Customers |
//! | 2      | Hibernating    | Hibernating        | At Risk            | At Risk         | Can't Lose Them |
//! | 1      | Lost           | Lost               | At Risk            | At Risk         | Can't Lose Them |

use serde::{Deserialize, Serialize};

/// One of the eleven standard RFM segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Segment {
    #[serde(rename = "Champions")]
    Champions,
    #[serde(rename = "Loyal Customers")]
    LoyalCustomers,
    #[serde(rename = "Potential Loyalist")]
    PotentialLoyalist,
    #[serde(rename = "New Customers")]
    NewCustomers,
    #[serde(rename = "Promising")]
    Promising,
    #[serde(rename = "Need Attention")]
    NeedAttention,
    #[serde(rename = "About To Sleep")]
    AboutToSleep,
    #[serde(rename = "At Risk")]
    AtRisk,
    #[serde(rename = "Can't Lose Them")]
    CantLoseThem,
    #[serde(rename = "Hibernating")]
    Hibernating,
    #[serde(rename = "Lost")]
    Lost,
}

impl Segment {
    /// The display name (also the JSON form).
    pub fn name(self) -> &'static str {
        match self {
            Segment::Champions => "Champions",
            Segment::LoyalCustomers => "Loyal Customers",
            Segment::PotentialLoyalist => "Potential Loyalist",
            Segment::NewCustomers => "New Customers",
            Segment::Promising => "Promising",
            Segment::NeedAttention => "Need Attention",
            Segment::AboutToSleep => "About To Sleep",
            Segment::AtRisk => "At Risk",
            Segment::CantLoseThem => "Can't Lose Them",
            Segment::Hibernating => "Hibernating",
            Segment::Lost => "Lost",
        }
    }

    /// The segment of scores R, F, M (each 1-5; out-of-range values are
    /// clamped into 1-5).
    pub fn of(r: u8, f: u8, m: u8) -> Segment {
        Segment::of_r_fm(r, fm(f, m))
    }

    /// The segment of R and FM (each 1-5, clamped), by the table above.
    pub fn of_r_fm(r: u8, fm: u8) -> Segment {
        use Segment::*;
        // One arm per row of the table, R = 5 first.
        match (r.clamp(1, 5), fm.clamp(1, 5)) {
            (5, 1) => NewCustomers,
            (5, 2 | 3) => PotentialLoyalist,
            (5, _) => Champions,
            (4, 1) => Promising,
            (4, 2 | 3) => PotentialLoyalist,
            (4, _) => LoyalCustomers,
            (3, 1 | 2) => AboutToSleep,
            (3, 3) => NeedAttention,
            (3, _) => LoyalCustomers,
            (2, 1 | 2) => Hibernating,
            (_, 1 | 2) => Lost,
            (_, 3 | 4) => AtRisk,
            (_, _) => CantLoseThem,
        }
    }
}

/// FM: the average of F and M rounded half up.
pub fn fm(f: u8, m: u8) -> u8 {
    (f.clamp(1, 5) + m.clamp(1, 5)).div_ceil(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_the_documented_table() {
        use Segment::*;
        // Rows R = 5 down to 1, columns FM = 1..5, as in the module docs.
        let table = [
            [NewCustomers, PotentialLoyalist, PotentialLoyalist, Champions, Champions],
            [
                Promising,
                PotentialLoyalist,
                PotentialLoyalist,
                LoyalCustomers,
                LoyalCustomers,
            ],
            [
                AboutToSleep,
                AboutToSleep,
                NeedAttention,
                LoyalCustomers,
                LoyalCustomers,
            ],
            [Hibernating, Hibernating, AtRisk, AtRisk, CantLoseThem],
            [Lost, Lost, AtRisk, AtRisk, CantLoseThem],
        ];
        for (row, r) in table.iter().zip([5u8, 4, 3, 2, 1]) {
            for (want, fm) in row.iter().zip(1u8..=5) {
                assert_eq!(Segment::of_r_fm(r, fm), *want, "R={r} FM={fm}");
            }
        }
    }

    #[test]
    fn fm_rounds_half_up() {
        assert_eq!(fm(1, 1), 1);
        assert_eq!(fm(1, 2), 2);
        assert_eq!(fm(4, 5), 5);
        assert_eq!(fm(3, 4), 4);
        assert_eq!(fm(5, 1), 3);
        assert_eq!(Segment::of(5, 5, 4), Segment::Champions);
        assert_eq!(Segment::of(5, 4, 3), Segment::Champions);
        assert_eq!(Segment::of(5, 4, 2), Segment::PotentialLoyalist);
        assert_eq!(Segment::of(1, 1, 1), Segment::Lost);
        assert_eq!(Segment::of(1, 5, 5), Segment::CantLoseThem);
    }

    #[test]
    fn json_uses_the_display_names() {
        assert_eq!(
            serde_json::to_string(&Segment::CantLoseThem).unwrap(),
            r#""Can't Lose Them""#
        );
        let all = [
            Segment::Champions,
            Segment::LoyalCustomers,
            Segment::PotentialLoyalist,
            Segment::NewCustomers,
            Segment::Promising,
            Segment::NeedAttention,
            Segment::AboutToSleep,
            Segment::AtRisk,
            Segment::CantLoseThem,
            Segment::Hibernating,
            Segment::Lost,
        ];
        for s in all {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.name()));
        }
    }
}
