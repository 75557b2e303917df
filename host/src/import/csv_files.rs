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
//!
//! An `order_id` column groups line items into one interaction: consecutive
//! rows of one customer with the same `order_id` become one purchase with
//! several items (a basket, as cross-sell fits need), as exports of order
//! lines are laid out. The order's fields come from its first row; a later
//! row may leave them empty or repeat them, but not contradict them. An
//! order is stored whole or not at all: if one of its rows is rejected,
//! every row of it is, each with its line number. Rows of an order that
//! reappear after other rows are rejected (the order would be split in two).

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

/// An interaction of the interactions CSV: one row, or the consecutive rows
/// of one order. Money stays text here: the store parses it against the
/// currency's number of decimals.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractionRow {
    pub customer_external_id: String,
    pub kind: String,
    pub occurred_at: OffsetDateTime,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub channel: Option<String>,
    pub idempotency_key: String,
    /// The `order_id` cell: the order these line items belong to.
    pub order_id: Option<String>,
    /// One per row (a row without `sku` has none).
    pub items: Vec<ItemRow>,
    /// Lines of the order's later rows, merged into this interaction (the
    /// first row's line is the `Row`'s).
    pub merged_lines: Vec<u64>,
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
    "order_id",
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
    // numbered so they stay distinct purchases. An order's key is derived
    // from its customer and order id, so every row of it agrees.
    let seen = std::cell::RefCell::new(HashMap::<String, u32>::new());
    let mut orders = OrderGrouper::new(emit);
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
            let order = match (header.get(cells, "customer_external_id"), header.get(cells, "order_id")) {
                (Some(customer), Some(order)) => Some((customer.to_string(), order.to_string())),
                _ => None,
            };
            let explicit_key = header.get(cells, "idempotency_key").is_some();
            let row = parse_interaction(header, cells).map(|mut row| {
                if row.idempotency_key.is_empty() {
                    row.idempotency_key = match &order {
                        Some((customer, order)) => {
                            let digest = hex::encode(Sha256::digest(format!("{customer}\u{1f}{order}").as_bytes()));
                            format!("import-order:{}", &digest[..32])
                        }
                        None => {
                            let digest = hex::encode(Sha256::digest(cells.join("\u{1f}").as_bytes()));
                            let mut seen = seen.borrow_mut();
                            let n = seen.entry(digest.clone()).or_insert(0);
                            *n += 1;
                            format!("import:{}:{n}", &digest[..32])
                        }
                    };
                }
                row
            });
            Ok(ParsedRow {
                order,
                explicit_key,
                row,
            })
        },
        |row| orders.push(row),
    )?;
    orders.finish();
    Ok(())
}

/// A data row as parsed, with the order it names (readable even when the
/// rest of the row is not, so the whole order can be rejected).
struct ParsedRow {
    /// (customer external id, order id)
    order: Option<(String, String)>,
    explicit_key: bool,
    row: Result<InteractionRow, String>,
}

/// The consecutive rows of one order, being collected.
struct OpenOrder {
    key: (String, String),
    first_line: u64,
    row: Option<InteractionRow>,
    /// Every line of the order, in file order.
    lines: Vec<u64>,
    /// Lines rejected for a reason of their own; the order's other lines
    /// are rejected because of the first of these.
    rejected: Vec<(u64, String)>,
}

/// Turns parsed rows into interactions: rows without an order pass through;
/// the consecutive rows of an order become one interaction (see the module
/// doc). Emits in file order; `emit` returning false stops everything.
struct OrderGrouper<E: FnMut(Row<InteractionRow>) -> bool> {
    emit: E,
    open: Option<OpenOrder>,
    /// First line of every order seen, to refuse an order split in two.
    seen: HashMap<(String, String), u64>,
    stopped: bool,
}

impl<E: FnMut(Row<InteractionRow>) -> bool> OrderGrouper<E> {
    fn new(emit: E) -> Self {
        OrderGrouper {
            emit,
            open: None,
            seen: HashMap::new(),
            stopped: false,
        }
    }

    fn send(&mut self, row: Row<InteractionRow>) -> bool {
        if !self.stopped && !(self.emit)(row) {
            self.stopped = true;
        }
        !self.stopped
    }

    fn push(&mut self, row: Row<ParsedRow>) -> bool {
        let line = row.line;
        let parsed = match row.parsed {
            // Not even its order is readable: rejected on its own.
            Err(reason) => {
                return self.send(Row {
                    line,
                    parsed: Err(reason),
                });
            }
            Ok(parsed) => parsed,
        };
        let Some(key) = parsed.order else {
            if !self.close() {
                return false;
            }
            return self.send(Row {
                line,
                parsed: parsed.row,
            });
        };
        if let Some(open) = self.open.as_mut()
            && open.key == key
        {
            open.add(line, parsed.row, parsed.explicit_key);
            return true;
        }
        if !self.close() {
            return false;
        }
        let mut open = OpenOrder {
            key: key.clone(),
            first_line: line,
            row: None,
            lines: vec![line],
            rejected: Vec::new(),
        };
        if let Some(first) = self.seen.get(&key) {
            open.rejected.push((
                line,
                format!(
                    "order_id {}: rows of an order must be consecutive (it started at line {first} and other rows came between)",
                    key.1
                ),
            ));
        } else {
            self.seen.insert(key, line);
            match parsed.row {
                Ok(row) => open.row = Some(row),
                Err(reason) => open.rejected.push((line, reason)),
            }
        }
        self.open = Some(open);
        true
    }

    /// Emits the open order, if any.
    fn close(&mut self) -> bool {
        let Some(open) = self.open.take() else {
            return !self.stopped;
        };
        match (open.rejected.first(), open.row) {
            (None, Some(mut row)) => {
                row.merged_lines = open.lines[1..].to_vec();
                self.send(Row {
                    line: open.first_line,
                    parsed: Ok(row),
                })
            }
            (first_rejected, _) => {
                let (bad_line, _) = first_rejected.cloned().unwrap_or((open.first_line, String::new()));
                for line in open.lines {
                    let reason = match open.rejected.iter().find(|(l, _)| *l == line) {
                        Some((_, reason)) => reason.clone(),
                        None => format!(
                            "order_id {}: not stored, its row at line {bad_line} was rejected",
                            open.key.1
                        ),
                    };
                    if !self.send(Row {
                        line,
                        parsed: Err(reason),
                    }) {
                        return false;
                    }
                }
                true
            }
        }
    }

    fn finish(mut self) {
        self.close();
    }
}

impl OpenOrder {
    /// Adds a later row of the order: its item, after checking it does not
    /// contradict the order's first row.
    fn add(&mut self, line: u64, row: Result<InteractionRow, String>, explicit_key: bool) {
        self.lines.push(line);
        let row = match row {
            Ok(row) => row,
            Err(reason) => {
                self.rejected.push((line, reason));
                return;
            }
        };
        let Some(first) = self.row.as_mut() else {
            // The order already failed; this line goes with it.
            return;
        };
        let differs = |field: &str| {
            format!(
                "order_id {}: {field} differs from the order's first row (line {})",
                self.key.1, self.first_line
            )
        };
        let optional_differs = |later: &Option<String>, first: &Option<String>| later.is_some() && later != first;
        let conflict = if row.kind != first.kind {
            Some(differs("kind"))
        } else if row.occurred_at != first.occurred_at {
            Some(differs("occurred_at"))
        } else if optional_differs(&row.amount, &first.amount) {
            Some(differs("amount"))
        } else if optional_differs(&row.currency, &first.currency) {
            Some(differs("currency"))
        } else if optional_differs(&row.channel, &first.channel) {
            Some(differs("channel"))
        } else if explicit_key && row.idempotency_key != first.idempotency_key {
            Some(differs("idempotency_key"))
        } else {
            None
        };
        match conflict {
            Some(reason) => self.rejected.push((line, reason)),
            None => first.items.extend(row.items),
        }
    }
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
    let items = match (sku, quantity, unit_price) {
        (None, None, None) => Vec::new(),
        (Some(sku), Some(quantity), Some(unit_price)) => vec![ItemRow {
            sku: sku.to_string(),
            quantity: parse_positive(quantity).map_err(|e| format!("quantity: {e}"))?,
            unit_price: unit_price.to_string(),
        }],
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
        order_id: header.get(cells, "order_id").map(str::to_string),
        items,
        merged_lines: Vec::new(),
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
            first.items,
            vec![ItemRow {
                sku: "BOOK".into(),
                quantity: 2,
                unit_price: "9.99".into()
            }]
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

    #[test]
    fn order_rows_become_one_interaction_or_are_rejected_together() {
        let rows = interactions(
            "order_id,customer_external_id,kind,occurred_at,currency,sku,quantity,unit_price\n\
             o1,c1,purchase,2024-05-01,EUR,A,1,1.00\n\
             o1,c1,purchase,2024-05-01,,B,2,2.00\n\
             o1,c1,purchase,2024-05-01,EUR,C,1,3.00\n\
             ,c1,purchase,2024-05-02,EUR,A,1,1.00\n\
             o2,c2,purchase,2024-05-03,EUR,A,1,1.00\n\
             o2,c2,purchase,2024-05-03,EUR,B,zero,1.00\n\
             o2,c2,purchase,2024-05-03,EUR,C,1,1.00\n\
             o3,c2,purchase,2024-05-03,EUR,A,1,1.00\n\
             o3,c2,purchase,2024-05-04,EUR,B,1,1.00\n\
             o1,c1,purchase,2024-05-01,EUR,D,1,4.00\n\
             o4,c3,purchase,2024-05-05,EUR,A,1,1.00\n",
        )
        .unwrap();
        // (line, Ok((skus, merged lines)) or Err(reason))
        type Got = (u64, Result<(Vec<String>, Vec<u64>), String>);
        let got: Vec<Got> = rows
            .iter()
            .map(|r| {
                (
                    r.line,
                    r.parsed
                        .as_ref()
                        .map(|i| (i.items.iter().map(|i| i.sku.clone()).collect(), i.merged_lines.clone()))
                        .map_err(Clone::clone),
                )
            })
            .collect();
        let ok = |skus: &[&str], merged: &[u64]| Ok((skus.iter().map(|s| s.to_string()).collect(), merged.to_vec()));
        assert_eq!(
            got,
            vec![
                (2, ok(&["A", "B", "C"], &[3, 4])),
                (5, ok(&["A"], &[])),
                (6, Err("order_id o2: not stored, its row at line 7 was rejected".into())),
                (7, Err("quantity: not an integer".into())),
                (8, Err("order_id o2: not stored, its row at line 7 was rejected".into())),
                (9, Err("order_id o3: not stored, its row at line 10 was rejected".into())),
                (
                    10,
                    Err("order_id o3: occurred_at differs from the order's first row (line 9)".into())
                ),
                (
                    11,
                    Err("order_id o1: rows of an order must be consecutive (it started at line 2 and other rows came between)".into())
                ),
                (12, ok(&["A"], &[])),
            ]
        );
        // Every row of an order shares one derived key, stable across runs.
        let first = rows[0].parsed.as_ref().unwrap();
        assert!(first.idempotency_key.starts_with("import-order:"), "{first:?}");
        assert_eq!(first.currency.as_deref(), Some("EUR"));
        assert_eq!(first.order_id.as_deref(), Some("o1"));
        let again = interactions(
            "order_id,customer_external_id,kind,occurred_at,currency,sku,quantity,unit_price\n\
             o1,c1,purchase,2024-05-01,EUR,Z,1,1.00\n",
        )
        .unwrap();
        assert_eq!(again[0].parsed.as_ref().unwrap().idempotency_key, first.idempotency_key);
    }
}
