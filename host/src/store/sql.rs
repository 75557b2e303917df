//! The small SQL helpers every store file's list queries share: page
//! limits and a dynamic-SQL builder that numbers `$N` placeholders, because
//! filters are optional and `sqlx::Any` has no query builder of its own.
//! Their own file so that no area imports another just for these (they
//! lived in `customers.rs`, which made every list endpoint depend on it).

use sqlx::Any;
use sqlx::any::AnyArguments;

use super::{StoreError, StoreResult};

/// Page size of every list endpoint when `limit` is absent, and its maximum.
pub(super) const DEFAULT_PAGE_LIMIT: u32 = 50;
pub(super) const MAX_PAGE_LIMIT: u32 = 500;

/// Validates a requested page size: absent means the default, 1..=500 otherwise.
pub(super) fn page_limit(limit: Option<u32>) -> StoreResult<i64> {
    match limit {
        None => Ok(DEFAULT_PAGE_LIMIT as i64),
        Some(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => Ok(n as i64),
        Some(_) => Err(StoreError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE_LIMIT}"),
        )),
    }
}

/// A bind value for [`Sql`].
#[derive(Debug, Clone)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
    Float(f64),
}

/// SQL text assembled at run time with its arguments, numbering `$N`
/// placeholders as they are added so optional filters stay correct.
///
/// Why not `sqlx::QueryBuilder`: with the `Any` driver it writes `?`
/// placeholders (`AnyArguments` keeps the trait's default
/// `format_placeholder`), which PostgreSQL rejects; `$N` works on both.
#[derive(Debug, Clone, Default)]
pub(super) struct Sql {
    pub text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &str) -> Sql {
        Sql {
            text: text.to_string(),
            args: Vec::new(),
        }
    }
    /// Adds an argument and returns its placeholder (`$N`).
    pub fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }
    pub fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }
    pub fn query(&self) -> sqlx::query::Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for arg in &self.args {
            q = match arg {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
                Arg::Float(f) => q.bind(*f),
            };
        }
        q
    }
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
pub(super) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
