//! Multi-row inserts for bulk writes (imports): many rows per statement
//! instead of one statement (and one round trip) per row.
//!
//! SQLite gets `INSERT ... VALUES (...), (...), ...` with a fixed number of
//! rows per statement, so every full chunk has the same text and reuses the
//! connection's cached prepared statement. PostgreSQL gets the rows as one
//! JSON array expanded by `json_to_recordset`: the role `UNNEST` plays for
//! drivers that can bind arrays (`sqlx::Any` cannot). Its text never depends
//! on the row count, so it is prepared once per connection, and a chunk of
//! thousands of rows is one bind parameter instead of tens of thousands.

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::StoreResult;
use crate::db::Backend;

/// A column of a bulk insert: its name and SQL type (PostgreSQL needs the
/// type to read the JSON record).
#[derive(Debug, Clone, Copy)]
pub(super) struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColumnType {
    Text,
    BigInt,
}

pub(super) const fn text(name: &'static str) -> Column {
    Column {
        name,
        ty: ColumnType::Text,
    }
}

pub(super) const fn bigint(name: &'static str) -> Column {
    Column {
        name,
        ty: ColumnType::BigInt,
    }
}

/// One value of a row; `None` is NULL.
#[derive(Debug, Clone)]
pub(super) enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
}

/// SQLite's limit on bind parameters per statement is 32,766; staying well
/// under it keeps statements small enough to parse quickly.
const SQLITE_MAX_PARAMS: usize = 8_000;
/// Rows per `json_to_recordset` statement on PostgreSQL.
const POSTGRES_ROWS: usize = 5_000;

/// Inserts `rows` into `table` (`columns` in order), appending `tail` (an
/// `ON CONFLICT` clause, a `RETURNING` list) to every statement, and returns
/// the rows the statements returned (none without `RETURNING`).
pub(super) async fn insert(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
    columns: &[Column],
    rows: &[Vec<Cell>],
    tail: &str,
) -> StoreResult<Vec<AnyRow>> {
    let mut returned = Vec::new();
    if rows.is_empty() || columns.is_empty() {
        return Ok(returned);
    }
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    let names = names.join(", ");
    match backend {
        Backend::Sqlite => {
            let per_statement = (SQLITE_MAX_PARAMS / columns.len()).max(1);
            for chunk in rows.chunks(per_statement) {
                // Anonymous `?` placeholders, not `$N`: binding looks each
                // named parameter up by a linear walk of the statement's
                // names (`sqlite3_bind_parameter_name`), which made binding
                // a statement of thousands of `$N` quadratic and 60% of an
                // import's time.
                let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
                let sql = format!(
                    "INSERT INTO {table} ({names}) VALUES {} {tail}",
                    vec![tuple.as_str(); chunk.len()].join(", ")
                );
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    for cell in row {
                        query = match cell {
                            Cell::Text(t) => query.bind(t.as_deref()),
                            Cell::Int(i) => query.bind(*i),
                        };
                    }
                }
                returned.extend(query.fetch_all(&mut *conn).await?);
            }
        }
        Backend::Postgres => {
            let record: Vec<String> = columns
                .iter()
                .map(|c| {
                    let ty = match c.ty {
                        ColumnType::Text => "text",
                        ColumnType::BigInt => "bigint",
                    };
                    format!("{} {ty}", c.name)
                })
                .collect();
            // `_n` numbers the rows so they are inserted in the order given
            // (the first of two rows with one unique key is the one stored).
            let sql = format!(
                "INSERT INTO {table} ({names}) SELECT {names} FROM json_to_recordset($1::json) \
                 AS r({}, _n bigint) ORDER BY _n {tail}",
                record.join(", ")
            );
            for chunk in rows.chunks(POSTGRES_ROWS) {
                let json: Vec<Value> = chunk
                    .iter()
                    .enumerate()
                    .map(|(n, row)| {
                        let mut object = Map::with_capacity(columns.len() + 1);
                        object.insert("_n".to_string(), Value::from(n));
                        for (column, cell) in columns.iter().zip(row) {
                            let value = match cell {
                                Cell::Text(t) => t.clone().map_or(Value::Null, Value::String),
                                Cell::Int(i) => i.map_or(Value::Null, Value::from),
                            };
                            object.insert(column.name.to_string(), value);
                        }
                        Value::Object(object)
                    })
                    .collect();
                let json = Value::Array(json).to_string();
                returned.extend(sqlx::query(&sql).bind(json).fetch_all(&mut *conn).await?);
            }
        }
    }
    Ok(returned)
}

/// The rows of `table` whose text `column` is one of `values`, tenant-scoped,
/// selecting `select`; in chunks of IN lists (both backends take them).
pub(super) async fn select_in(
    conn: &mut AnyConnection,
    tenant: &str,
    table: &str,
    select: &str,
    column: &str,
    values: &[&str],
) -> StoreResult<Vec<AnyRow>> {
    let mut rows = Vec::new();
    for chunk in values.chunks(500) {
        let params: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT {select} FROM {table} WHERE tenant_id = $1 AND {column} IN ({})",
            params.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(tenant);
        for value in chunk {
            query = query.bind(*value);
        }
        rows.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(rows)
}

/// The text column `name` of each row.
pub(super) fn texts(rows: &[AnyRow], name: &str) -> StoreResult<Vec<String>> {
    rows.iter().map(|r| Ok(r.try_get::<String, _>(name)?)).collect()
}
