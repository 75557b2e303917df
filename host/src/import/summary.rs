//! The tally of one import run: what was read, created, replayed and
//! rejected, with rejections grouped by reason so that a file with ten
//! thousand bad dates prints one line, not ten thousand.

use std::collections::BTreeMap;
use std::fmt;

/// How many line numbers are kept per rejection reason: enough to find the
/// pattern in the file, not so many that the summary drowns.
pub const LINES_KEPT_PER_REASON: usize = 5;

/// Rows rejected for one reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    pub count: u64,
    /// The first [`LINES_KEPT_PER_REASON`] line numbers (1-based, as an
    /// editor shows them), in file order.
    pub first_lines: Vec<u64>,
}

/// Outcome of an import. Every data row ends up in exactly one of
/// `created`, `replayed`, `merged_rows` or `rejected`, so
/// `rows_read == created + replayed + merged_rows + rejected_rows()`
/// (`created` being customers for a customers CSV, interactions otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Data rows read (header and blank lines excluded).
    pub rows_read: u64,
    /// Customers that did not exist before, whether a row named them
    /// directly (customers CSV) or through an interaction.
    pub customers_created: u64,
    /// Interactions stored by this run.
    pub interactions_created: u64,
    /// Rows whose record was already present: an existing customer
    /// (customers CSV) or an interaction whose idempotency key was already
    /// stored with the same content.
    pub replayed: u64,
    /// Rows stored as further line items of an order's interaction (its
    /// first row counts as created or replayed).
    pub merged_rows: u64,
    /// Rejected rows, keyed by reason.
    pub rejected: BTreeMap<String, Rejections>,
}

impl Summary {
    /// Records a rejected row.
    pub fn reject(&mut self, line: u64, reason: impl Into<String>) {
        let entry = self.rejected.entry(reason.into()).or_default();
        entry.count += 1;
        if entry.first_lines.len() < LINES_KEPT_PER_REASON {
            entry.first_lines.push(line);
        }
    }

    pub fn rejected_rows(&self) -> u64 {
        self.rejected.values().map(|r| r.count).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rows read:             {}", self.rows_read)?;
        writeln!(f, "customers created:     {}", self.customers_created)?;
        writeln!(f, "interactions created:  {}", self.interactions_created)?;
        writeln!(f, "replayed (present):    {}", self.replayed)?;
        if self.merged_rows > 0 {
            writeln!(f, "merged into orders:    {}", self.merged_rows)?;
        }
        write!(f, "rejected:              {}", self.rejected_rows())?;
        // Most frequent reason first: that is the one worth fixing first.
        let mut reasons: Vec<_> = self.rejected.iter().collect();
        reasons.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        for (reason, rejections) in reasons {
            let lines: Vec<String> = rejections.first_lines.iter().map(u64::to_string).collect();
            let more = if rejections.count > rejections.first_lines.len() as u64 {
                ", ..."
            } else {
                ""
            };
            write!(
                f,
                "\n  {:>6} × {reason} (line {}{more})",
                rejections.count,
                lines.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_reasons_and_keeps_first_lines() {
        let mut summary = Summary {
            rows_read: 9,
            ..Summary::default()
        };
        for line in 2..=8 {
            summary.reject(line, "date: not a date");
        }
        summary.reject(9, "amount: negative");
        assert_eq!(summary.rejected_rows(), 8);
        assert_eq!(summary.rejected["date: not a date"].first_lines, vec![2, 3, 4, 5, 6]);
        let text = summary.to_string();
        assert!(
            text.contains("7 × date: not a date (line 2, 3, 4, 5, 6, ...)"),
            "{text}"
        );
        assert!(text.contains("1 × amount: negative (line 9)"), "{text}");
        // The larger group is listed first.
        assert!(text.find("date:").unwrap() < text.find("amount:").unwrap(), "{text}");
    }
}
