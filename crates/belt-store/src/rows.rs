//! Reading columns of a row, SQLite's or PostgreSQL's, without a panic: sqlx's `Row::get`
//! panics on a value that does not decode (text that is not UTF-8, a number where text
//! belongs), and such a value is only ever there when the database was damaged. Every read
//! of either store goes through here and says which column failed; the stores turn that into
//! [`belt_core::store::StoreError::Damaged`] naming the run.

use belt_core::{RunStatus, StepOutcome, Usage};
use sqlx::{ColumnIndex, Decode, Row, Type};
use std::sync::Arc;

/// Column `name` of a row, or what does not decode.
pub(crate) fn col<'r, T, R>(r: &'r R, name: &str) -> Result<T, String>
where
    R: Row,
    T: Decode<'r, R::Database> + Type<R::Database>,
    for<'n> &'n str: ColumnIndex<R>,
{
    r.try_get(name).map_err(|e| match e {
        sqlx::Error::ColumnDecode { source, .. } => format!("column `{name}`: {source}"),
        other => format!("column `{name}`: {other}"),
    })
}

/// `column `x`: why` as `column `x` of WHAT: why`: which record the column belongs to.
pub(crate) fn within(detail: String, what: &str) -> String {
    match detail.split_once(": ") {
        Some((column, why)) => format!("{column} of {what}: {why}"),
        None => format!("{detail} of {what}"),
    }
}

/// A count (tokens, milliseconds, a sequence number) kept as a signed integer: a negative
/// one can only come from damage, and is reported, not wrapped around.
pub(crate) fn count<R>(r: &R, name: &str) -> Result<u64, String>
where
    R: Row,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'n> &'n str: ColumnIndex<R>,
{
    let v: i64 = col(r, name)?;
    u64::try_from(v).map_err(|_| format!("column `{name}`: {v} is negative"))
}

/// [`count`] of a column that may be NULL.
pub(crate) fn opt_count<R>(r: &R, name: &str) -> Result<Option<u64>, String>
where
    R: Row,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'n> &'n str: ColumnIndex<R>,
{
    match col::<Option<i64>, R>(r, name)? {
        Some(v) => u64::try_from(v).map(Some).map_err(|_| format!("column `{name}`: {v} is negative")),
        None => Ok(None),
    }
}

/// Column `status` of a row of `runs`; an unknown status is damage, never guessed.
pub(crate) fn status<R>(r: &R) -> Result<RunStatus, String>
where
    R: Row,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'n> &'n str: ColumnIndex<R>,
{
    let s: String = col(r, "status")?;
    serde_json::from_value(serde_json::Value::String(s.clone()))
        .map_err(|_| format!("column `status`: `{s}` is not a run status"))
}

/// What a step's row says of its outcome: model, usage (the provider's own report beside it
/// when it was more than the request allowed), cost, attempts, time. The same columns in
/// both stores.
pub(crate) fn outcome<R>(r: &R) -> Result<StepOutcome, String>
where
    R: Row,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'n> &'n str: ColumnIndex<R>,
{
    let reported_usage = match col::<Option<String>, R>(r, "reported_usage")? {
        Some(json) => Some(serde_json::from_str(&json).map_err(|e| format!("column `reported_usage`: {e}"))?),
        None => None,
    };
    Ok(StepOutcome {
        model: Arc::from(col::<String, R>(r, "model")?),
        usage: Usage {
            input_tokens: count(r, "input_tokens")?,
            output_tokens: count(r, "output_tokens")?,
            cache_read_tokens: count(r, "cache_read_tokens")?,
            cache_write_tokens: count(r, "cache_write_tokens")?,
            reasoning_tokens: count(r, "reasoning_tokens")?,
        },
        cost_usd: col(r, "cost_usd")?,
        attempts: u32::try_from(count(r, "attempts")?)
            .map_err(|_| "column `attempts`: too large".to_string())?,
        duration_ms: count(r, "duration_ms")?,
        replayed: false,
        cached: false,
        reported_usage,
        finish_reason: col::<Option<String>, R>(r, "finish_reason")?.map(Arc::from),
        unpriced: col(r, "unpriced")?,
        // Not a column: the step's `step_completed` event keeps it (for `belt runs trace`).
        limit_wait_ms: 0,
    })
}
