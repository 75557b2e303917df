//! The CDNOW purchase history (Fader, Hardie & Lee): whitespace-separated
//! `customer_id date(YYYYMMDD) number_of_cds dollar_value`, one purchase a
//! line. The 1/10 sample file has one more column after the customer id (the
//! sample's own renumbering); it is recognised and ignored, so that a
//! customer keeps the same external id whichever file it came from.
//!
//! How rows map to Rapport (documented in the README too):
//! - customer `external_id` = the id exactly as written (`"00001"`): text,
//!   zero-padded, so it sorts like the file and never loses its padding;
//! - one `purchase` interaction per row, at 00:00 UTC of the date, with
//!   `amount` = dollar_value exactly (in cents) in the chosen currency;
//! - line items of sku `CD` whose quantities add up to number_of_cds and
//!   whose total is exactly the amount: one item at amount/qty when that
//!   divides evenly, otherwise two items whose unit prices differ by one
//!   cent (29.33 for 2 CDs = 1 × 14.66 + 1 × 14.67), so no cent is lost;
//! - rows with dollar_value 0 (80 in the master file: free or fully
//!   discounted orders) are kept as purchases of amount 0 with their
//!   quantity at unit price 0, never dropped;
//! - idempotency key `cdnow:<customer>:<date>:<cds>:<cents>:<n>`, where n
//!   counts identical earlier rows (the file has genuine duplicates). It
//!   depends only on the row's content, so re-running the import, or
//!   importing the master file after the sample (a subset of it), stores
//!   nothing twice.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::fields::{parse_cents, parse_compact_date, parse_positive};
use super::{ImportError, Progress, Row};

/// The file looked for when the import is given a folder.
pub const MASTER_FILE: &str = "CDNOW_master.txt";

/// The SKU of every CDNOW line item: the data set records only a count of CDs.
pub const SKU: &str = "CD";

/// One purchase, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// As written in the file, e.g. `00001`.
    pub customer: String,
    pub occurred_at: OffsetDateTime,
    pub cds: i64,
    pub cents: i64,
    pub idempotency_key: String,
}

impl Purchase {
    /// Line items `(quantity, unit price in cents)` adding up to exactly
    /// `cds` CDs and `cents` (see the module docs).
    pub fn line_items(&self) -> Vec<(i64, i64)> {
        split_evenly(self.cents, self.cds)
    }
}

/// Splits `total` over `quantity` units into at most two price points that
/// differ by one minor unit and add up to `total` exactly.
pub fn split_evenly(total: i64, quantity: i64) -> Vec<(i64, i64)> {
    if quantity <= 0 {
        return Vec::new();
    }
    let base = total / quantity;
    let remainder = total % quantity;
    if remainder == 0 {
        vec![(quantity, base)]
    } else {
        vec![(quantity - remainder, base), (remainder, base + 1)]
    }
}

/// The file to read: `path` itself, or `path/CDNOW_master.txt` for a folder.
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(MASTER_FILE)
    } else {
        path.to_path_buf()
    }
}

/// Which of the two published layouts a file uses, fixed by its first data row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `customer date cds dollars` (CDNOW_master.txt)
    Master,
    /// `customer sample_id date cds dollars` (CDNOW_sample.txt)
    Sample,
}

impl Layout {
    fn fields(self) -> usize {
        match self {
            Layout::Master => 4,
            Layout::Sample => 5,
        }
    }
}

/// Parses the rows of a CDNOW file, line by line, and hands each (parsed or
/// rejected) to `emit`. Stops early, without error, when `emit` returns false.
pub fn read(path: &Path, progress: &Progress, mut emit: impl FnMut(Row<Purchase>) -> bool) -> Result<(), ImportError> {
    let file = std::fs::File::open(path).map_err(|source| ImportError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    progress.set_length(file.metadata().map(|m| m.len()).unwrap_or(0));
    let mut reader = std::io::BufReader::new(file);
    let mut parser = Parser::default();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(|source| ImportError::Read {
            path: path.to_path_buf(),
            line: line_no + 1,
            source,
        })?;
        if read == 0 {
            return Ok(());
        }
        line_no += 1;
        progress.inc(read as u64);
        let Some(parsed) = parser.line(&buf) else {
            continue;
        };
        if !emit(Row { line: line_no, parsed }) {
            return Ok(());
        }
    }
}

/// Line parser; keeps the state a line needs (layout, duplicate counts).
#[derive(Default)]
struct Parser {
    layout: Option<Layout>,
    /// Occurrences so far of each row content, for the idempotency key.
    seen: HashMap<String, u32>,
}

impl Parser {
    /// `None` for lines that are not data: blank lines and the column-name
    /// header the master file starts with.
    fn line(&mut self, raw: &[u8]) -> Option<Result<Purchase, String>> {
        let Ok(text) = std::str::from_utf8(raw) else {
            return Some(Err("line is not valid UTF-8".into()));
        };
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        let first = *fields.first()?;
        let is_number = first.bytes().all(|b| b.is_ascii_digit());
        if !is_number && self.layout.is_none() && first.eq_ignore_ascii_case("customer_id") {
            return None; // the header
        }
        Some(self.fields(&fields))
    }

    fn fields(&mut self, fields: &[&str]) -> Result<Purchase, String> {
        let layout = *self.layout.get_or_insert(match fields.len() {
            5 => Layout::Sample,
            _ => Layout::Master,
        });
        if fields.len() != layout.fields() {
            return Err(format!(
                "expected {} whitespace-separated fields (customer_id date number_of_cds dollar_value)",
                layout.fields()
            ));
        }
        let (customer, rest) = match layout {
            Layout::Master => (fields[0], &fields[1..]),
            Layout::Sample => (fields[0], &fields[2..]),
        };
        if customer.is_empty() || !customer.bytes().all(|b| b.is_ascii_digit()) {
            return Err("customer_id: not a number".into());
        }
        let occurred_at = parse_compact_date(rest[0]).map_err(|e| format!("date: {e}"))?;
        let cds = parse_positive(rest[1]).map_err(|e| format!("number_of_cds: {e}"))?;
        let cents = parse_cents(rest[2]).map_err(|e| format!("dollar_value: {e}"))?;
        let content = format!("cdnow:{customer}:{}:{cds}:{cents}", rest[0]);
        let seen = self.seen.entry(content.clone()).or_insert(0);
        *seen += 1;
        Ok(Purchase {
            customer: customer.to_string(),
            occurred_at,
            cds,
            cents,
            idempotency_key: format!("{content}:{seen}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &str) -> Vec<Option<Result<Purchase, String>>> {
        let mut parser = Parser::default();
        text.split_inclusive('\n')
            .map(|line| parser.line(line.as_bytes()))
            .collect()
    }

    #[test]
    fn master_layout_with_header_crlf_and_duplicates() {
        let rows = parse_all(
            " customer_id  date number_of_cds  dollar_value\r\n 00002 19970112  1   12.00\r\n\r\n 00002 19970112  1   12.00\r\n 00003 19970102  2   0.00\r\n",
        );
        assert_eq!(rows[0], None);
        let first = rows[1].clone().unwrap().unwrap();
        assert_eq!(first.customer, "00002");
        assert_eq!(first.cents, 1200);
        assert_eq!(first.occurred_at.unix_timestamp(), 853_027_200);
        assert_eq!(first.idempotency_key, "cdnow:00002:19970112:1:1200:1");
        assert_eq!(rows[2], None);
        // An identical row is a second purchase, with its own key.
        assert_eq!(
            rows[3].clone().unwrap().unwrap().idempotency_key,
            "cdnow:00002:19970112:1:1200:2"
        );
        let free = rows[4].clone().unwrap().unwrap();
        assert_eq!((free.cents, free.line_items()), (0, vec![(2, 0)]));
    }

    #[test]
    fn sample_layout_keeps_the_master_id() {
        let rows = parse_all(" 00004 0001 19970101  2   29.33\r\n");
        let p = rows[0].clone().unwrap().unwrap();
        assert_eq!(p.customer, "00004");
        assert_eq!(p.idempotency_key, "cdnow:00004:19970101:2:2933:1");
        assert_eq!(p.line_items(), vec![(1, 1466), (1, 1467)]);
    }

    #[test]
    fn bad_rows_get_reasons() {
        let rows = parse_all(
            "00001 19970101 1 11.77\n00001 1997010 1 1.00\n00001 19970101 0 1.00\nx 19970101 1 1.00\n00001 19970101 1\n00001 19970101 1 -3\n",
        );
        assert!(rows[0].clone().unwrap().is_ok());
        let reasons: Vec<String> = rows[1..].iter().map(|r| r.clone().unwrap().unwrap_err()).collect();
        assert_eq!(
            reasons,
            vec![
                "date: expected YYYYMMDD",
                "number_of_cds: must be a positive integer",
                "customer_id: not a number",
                "expected 4 whitespace-separated fields (customer_id date number_of_cds dollar_value)",
                "dollar_value: expected a non-negative amount with at most 2 decimals",
            ]
        );
    }

    #[test]
    fn splits_add_up_exactly() {
        for total in [0, 1, 99, 1177, 2933, 7700, 123_457] {
            for qty in 1..=12 {
                let items = split_evenly(total, qty);
                assert_eq!(items.iter().map(|(q, _)| q).sum::<i64>(), qty);
                assert_eq!(items.iter().map(|(q, p)| q * p).sum::<i64>(), total);
                assert!(items.iter().all(|(q, p)| *q > 0 && *p >= 0));
            }
        }
    }
}
