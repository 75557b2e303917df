//! The two CSV formats: customers and interactions. A header row names the
//! columns (any order); a broken header aborts the import, a broken data row
//! is rejected with its line number and the import goes on.
//!
//! - customers: `external_id` (required), `name`, `email`, `phone`; any
//!   other column becomes a string attribute (empty cells are left out).
//! - interactions: `customer_external_id`, `kind`, `occurred_at` (required),
//!   `amount`, `currency`, `channel`, `idempotency_key`, and for one line
//!   item `sku`, `quantity`, `unit_price`. Unknown columns are a header
//!   error: a misspelt `ammount` must not be silently ignored.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::fields::{parse_positive, parse_time};
use super::{ImportError, Progress, Row};

/// A customers CSV row.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRow {
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// An interactions CSV row. Money stays text here: the store parses it
/// against the currency's number of decimals.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractionRow {
    pub customer_external_id: String,
    pub kind: String,
    pub occurred_at: OffsetDateTime,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub channel: Option<String>,
    pub idempotency_key: String,
    pub item: Option<ItemRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    pub sku: String,
    pub quantity: i64,
    pub unit_price: String,
}

const CUSTOMER_COLUMNS: &[&str] = &["external_id", "name", "email", "phone"];
const INTERACTION_COLUMNS: &[&str] = &[
    "customer_external_id",
    "kind",
    "occurred_at",
    "amount",
    "currency",
    "channel",
    "idempotency_key",
    "sku",
    "quantity",
    "unit_price",
];

/// Column name -> index, from the header row.
struct Header {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Header {
    fn parse(path: &Path, record: &csv::ByteRecord, required: &[&str]) -> Result<Header, ImportError> {
        let bad = |message: String| ImportError::Header {
            path: path.to_path_buf(),
            message,
        };
        let mut names = Vec::with_capacity(record.len());
        let mut index = HashMap::new();
        for (i, raw) in record.iter().enumerate() {
            let name = std::str::from_utf8(raw).map_err(|_| bad(format!("column {} is not valid UTF-8", i + 1)))?;
            // Spreadsheet exports often start with a byte-order mark.
            let name = name.trim_start_matches('\u{feff}').trim().to_string();
            if name.is_empty() {
                return Err(bad(format!("column {} has no name", i + 1)));
            }
            if index.insert(name.clone(), i).is_some() {
                return Err(bad(format!("column {name:?} appears twice")));
            }
            names.push(name);
        }
        let missing: Vec<&str> = required.iter().copied().filter(|c| !index.contains_key(*c)).collect();
        if !missing.is_empty() {
            return Err(bad(format!("missing required column(s): {}", missing.join(", "))));
        }
        Ok(Header { names, index })
    }

    /// The trimmed cell of `column`, `None` when the column is absent or the
    /// cell empty.
    fn get<'r>(&self, cells: &'r [&'r str], column: &str) -> Option<&'r str> {
        self.index
            .get(column)
            .and_then(|&i| cells.get(i))
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
    }
}

/// Longest logical row accepted. A row only gets this long through an
/// unterminated quote swallowing the rest of the file; past it the row is
/// rejected and reading resumes on the next line.
const MAX_ROW_BYTES: usize = 1 << 20;

/// Reads a CSV file row by row: header first (errors abort), then each data
/// row through `parse_row` into `emit` (stops early when `emit` returns false).
///
/// Lines are split here rather than by the csv reader because line numbers
/// are the point of the error report, and the csv reader's positions drift
/// on CRLF files and blank lines. A row whose quotes are unbalanced runs on
/// to the next line (a quoted field with a line break), so each logical row
/// is parsed on its own with the line it started on.
fn read_csv<T>(
    path: &Path,
    progress: &Progress,
    required: &[&str],
    check_header: impl Fn(&Header) -> Result<(), String>,
    parse_row: impl Fn(&Header, &[&str]) -> Result<T, String>,
    mut emit: impl FnMut(Row<T>) -> bool,
) -> Result<(), ImportError> {
    let file = std::fs::File::open(path).map_err(|source| ImportError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    progress.set_length(file.metadata().map(|m| m.len()).unwrap_or(0));
    let mut lines = std::io::BufReader::new(file);
    // Flexible: a row with the wrong number of cells is that row's problem,
    // reported with its line, not a reason to stop reading.
    let mut builder = csv::ReaderBuilder::new();
    builder.has_headers(false).flexible(true);
    let mut header: Option<Header> = None;
    let mut chunk = Vec::new();
    let mut line_no = 0u64;
    loop {
        chunk.clear();
        let first_line = line_no + 1;
        // One logical row: physical lines until the quotes balance.
        loop {
            let read = lines
                .read_until(b'\n', &mut chunk)
                .map_err(|source| ImportError::Read {
                    path: path.to_path_buf(),
                    line: line_no + 1,
                    source,
                })?;
            if read == 0 {
                break;
            }
            line_no += 1;
            progress.inc(read as u64);
            let quotes = chunk.iter().filter(|&&b| b == b'"').count();
            if quotes % 2 == 0 || chunk.len() > MAX_ROW_BYTES {
                break;
            }
        }
        if chunk.is_empty() {
            return match header {
                Some(_) => Ok(()),
                None => Err(ImportError::Header {
                    path: path.to_path_buf(),
                    message: "the file is empty".into(),
                }),
            };
        }
        if chunk.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = if chunk.len() > MAX_ROW_BYTES {
            Err(format!(
                "row longer than {MAX_ROW_BYTES} bytes (an unterminated quote?)"
            ))
        } else {
            parse_record(&mut builder, &chunk)
        };
        let Some(header) = &header else {
            let record = parsed.map_err(|message| ImportError::Header {
                path: path.to_path_buf(),
                message,
            })?;
            let parsed_header = Header::parse(path, &record, required)?;
            check_header(&parsed_header).map_err(|message| ImportError::Header {
                path: path.to_path_buf(),
                message,
            })?;
            header = Some(parsed_header);
            continue;
        };
        // A line of nothing but separators (`,,,`) is a spreadsheet artefact.
        if let Ok(record) = &parsed
            && record.iter().all(|cell| cell.iter().all(u8::is_ascii_whitespace))
        {
            continue;
        }
        let parsed = parsed.and_then(|record| {
            let cells = row_cells(&record, header.names.len())?;
            parse_row(header, &cells)
        });
        if !emit(Row {
            line: first_line,
            parsed,
        }) {
            return Ok(());
        }
    }
}

/// Parses one logical row (which may span lines inside quotes).
fn parse_record(builder: &mut csv::ReaderBuilder, chunk: &[u8]) -> Result<csv::ByteRecord, String> {
    let mut reader = builder.buffer_capacity(chunk.len() + 1).from_reader(chunk);
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => Ok(record),
        Ok(false) => Ok(csv::ByteRecord::new()),
        Err(e) => Err(format!("not valid CSV: {e}")),
    }
}

fn row_cells(record: &csv::ByteRecord, expected: usize) -> Result<Vec<&str>, String> {
    if record.len() != expected {
        return Err(format!("expected {expected} cells like the header"));
    }
    record
        .iter()
        .enumerate()
        .map(|(i, cell)| std::str::from_utf8(cell).map_err(|_| format!("cell {} is not valid UTF-8", i + 1)))
        .collect()
}

pub fn read_customers(
    path: &Path,
    progress: &Progress,
    emit: impl FnMut(Row<CustomerRow>) -> bool,
) -> Result<(), ImportError> {
    read_csv(path, progress, &["external_id"], |_| Ok(()), parse_customer, emit)
}

fn parse_customer(header: &Header, cells: &[&str]) -> Result<CustomerRow, String> {
    let external_id = header
        .get(cells, "external_id")
        .ok_or("external_id: required")?
        .to_string();
    let mut attributes = serde_json::Map::new();
    for (name, &i) in &header.index {
        if CUSTOMER_COLUMNS.contains(&name.as_str()) {
            continue;
        }
        let value = cells.get(i).map(|c| c.trim()).unwrap_or("");
        if !value.is_empty() {
            attributes.insert(name.clone(), serde_json::Value::String(value.to_string()));
        }
    }
    Ok(CustomerRow {
        external_id,
        name: header.get(cells, "name").map(str::to_string),
        email: header.get(cells, "email").map(str::to_string),
        phone: header.get(cells, "phone").map(str::to_string),
        attributes,
    })
}

pub fn read_interactions(
    path: &Path,
    progress: &Progress,
    emit: impl FnMut(Row<InteractionRow>) -> bool,
) -> Result<(), ImportError> {
    // Rows without an idempotency key get one derived from their content, so
    // that re-running the same file stores nothing twice. Identical rows are
    // numbered so they stay distinct purchases.
    let seen = std::cell::RefCell::new(HashMap::<String, u32>::new());
    read_csv(
        path,
        progress,
        &["customer_external_id", "kind", "occurred_at"],
        |header| {
            let unknown: Vec<&str> = header
                .names
                .iter()
                .map(String::as_str)
                .filter(|n| !INTERACTION_COLUMNS.contains(n))
                .collect();
            if unknown.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "unknown column(s): {} (expected {})",
                    unknown.join(", "),
                    INTERACTION_COLUMNS.join(",")
                ))
            }
        },
        |header, cells| {
            let mut row = parse_interaction(header, cells)?;
            if row.idempotency_key.is_empty() {
                let digest = hex::encode(Sha256::digest(cells.join("\u{1f}").as_bytes()));
                let mut seen = seen.borrow_mut();
                let n = seen.entry(digest.clone()).or_insert(0);
                *n += 1;
                row.idempotency_key = format!("import:{}:{n}", &digest[..32]);
            }
            Ok(row)
        },
        emit,
    )
}

fn parse_interaction(header: &Header, cells: &[&str]) -> Result<InteractionRow, String> {
    let customer_external_id = header
        .get(cells, "customer_external_id")
        .ok_or("customer_external_id: required")?
        .to_string();
    let kind = header.get(cells, "kind").ok_or("kind: required")?.to_string();
    let occurred_at = parse_time(header.get(cells, "occurred_at").ok_or("occurred_at: required")?)
        .map_err(|e| format!("occurred_at: {e}"))?;
    let sku = header.get(cells, "sku");
    let quantity = header.get(cells, "quantity");
    let unit_price = header.get(cells, "unit_price");
    let item = match (sku, quantity, unit_price) {
        (None, None, None) => None,
        (Some(sku), Some(quantity), Some(unit_price)) => Some(ItemRow {
            sku: sku.to_string(),
            quantity: parse_positive(quantity).map_err(|e| format!("quantity: {e}"))?,
            unit_price: unit_price.to_string(),
        }),
        _ => return Err("sku, quantity and unit_price: give all three or none".into()),
    };
    Ok(InteractionRow {
        customer_external_id,
        kind,
        occurred_at,
        amount: header.get(cells, "amount").map(str::to_string),
        currency: header.get(cells, "currency").map(str::to_string),
        channel: header.get(cells, "channel").map(str::to_string),
        idempotency_key: header.get(cells, "idempotency_key").unwrap_or("").to_string(),
        item,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect<T>(
        text: &str,
        read: impl Fn(&Path, &Progress, &mut dyn FnMut(Row<T>) -> bool) -> Result<(), ImportError>,
    ) -> Result<Vec<Row<T>>, ImportError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, text).unwrap();
        let mut rows = Vec::new();
        read(&path, &Progress::hidden(), &mut |row| {
            rows.push(row);
            true
        })?;
        Ok(rows)
    }

    fn customers(text: &str) -> Result<Vec<Row<CustomerRow>>, ImportError> {
        collect(text, |p, g, e| read_customers(p, g, e))
    }

    fn interactions(text: &str) -> Result<Vec<Row<InteractionRow>>, ImportError> {
        collect(text, |p, g, e| read_interactions(p, g, e))
    }

    #[test]
    fn customers_with_extra_columns_and_bad_rows() {
        let rows = customers(
            "\u{feff}external_id,name,email,phone,tier,city\nc1,Ada,ada@example.com,,gold,\n,No Id,,,,\nc2,\"Lovelace, Ada\",,,\n\nc3,,,,,Paris\n",
        )
        .unwrap();
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 6]);
        let c1 = rows[0].parsed.as_ref().unwrap();
        assert_eq!(c1.external_id, "c1");
        assert_eq!(c1.name.as_deref(), Some("Ada"));
        assert_eq!(c1.phone, None);
        assert_eq!(
            serde_json::Value::Object(c1.attributes.clone()),
            serde_json::json!({ "tier": "gold" })
        );
        assert_eq!(rows[1].parsed.as_ref().unwrap_err(), "external_id: required");
        assert_eq!(rows[2].parsed.as_ref().unwrap_err(), "expected 6 cells like the header");
        assert_eq!(rows[3].parsed.as_ref().unwrap().attributes["city"], "Paris");
    }

    #[test]
    fn line_numbers_survive_crlf_blank_lines_and_quoted_line_breaks() {
        let rows = customers(
            "external_id,name\r\n\r\nc1,\"two\r\nlines\"\r\nc2,\"a \"\"quoted\"\" word\"\r\n,,\r\nc3,x,y\r\nc4,z",
        )
        .unwrap();
        let got: Vec<(u64, Result<String, String>)> = rows
            .into_iter()
            .map(|r| {
                (
                    r.line,
                    r.parsed
                        .map(|c| format!("{}={}", c.external_id, c.name.unwrap_or_default())),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (3, Ok("c1=two\r\nlines".to_string())),
                (5, Ok("c2=a \"quoted\" word".to_string())),
                (7, Err("expected 2 cells like the header".to_string())),
                (8, Ok("c4=z".to_string())),
            ]
        );
    }

    #[test]
    fn broken_headers_abort() {
        let err = customers("").unwrap_err().to_string();
        assert!(err.contains("the file is empty"), "{err}");
        let err = customers("name,email\nAda,a@x\n").unwrap_err().to_string();
        assert!(err.contains("missing required column(s): external_id"), "{err}");
        let err = customers("external_id,name,name\n").unwrap_err().to_string();
        assert!(err.contains("\"name\" appears twice"), "{err}");
        let err = interactions("customer_external_id,kind,occurred_at,ammount\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown column(s): ammount"), "{err}");
    }

    #[test]
    fn interactions_rows() {
        let rows = interactions(
            "customer_external_id,kind,occurred_at,amount,currency,channel,idempotency_key,sku,quantity,unit_price\n\
             c1,purchase,2024-05-01,19.98,EUR,web,k1,BOOK,2,9.99\n\
             c1,purchase,2024-05-01T10:00:00Z,5.00,EUR,,,,,\n\
             c1,purchase,2024-05-01T10:00:00Z,5.00,EUR,,,,,\n\
             c1,purchase,01/05/2024,5.00,EUR,,,,,\n\
             c1,purchase,2024-05-01,5.00,EUR,,,BOOK,,\n\
             c1,purchase,2024-05-01,5.00,EUR,,,BOOK,0,5.00\n",
        )
        .unwrap();
        let first = rows[0].parsed.as_ref().unwrap();
        assert_eq!(first.idempotency_key, "k1");
        assert_eq!(first.occurred_at.unix_timestamp(), 1_714_521_600);
        assert_eq!(
            first.item,
            Some(ItemRow {
                sku: "BOOK".into(),
                quantity: 2,
                unit_price: "9.99".into()
            })
        );
        let a = &rows[1].parsed.as_ref().unwrap().idempotency_key;
        let b = &rows[2].parsed.as_ref().unwrap().idempotency_key;
        assert!(a.starts_with("import:") && a.ends_with(":1"), "{a}");
        assert_eq!(a.trim_end_matches(":1"), b.trim_end_matches(":2"));
        assert!(
            rows[3]
                .parsed
                .as_ref()
                .unwrap_err()
                .starts_with("occurred_at: expected RFC 3339")
        );
        assert_eq!(
            rows[4].parsed.as_ref().unwrap_err(),
            "sku, quantity and unit_price: give all three or none"
        );
        assert_eq!(
            rows[5].parsed.as_ref().unwrap_err(),
            "quantity: must be a positive integer"
        );
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 3, 4, 5, 6, 7]);
    }
}
