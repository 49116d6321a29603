//! The wall clock, read for every event: [`now_utc`].
//!
//! Every event carries the time it happened (`Event::ts`), a run emits two or three events
//! per step, and `chrono::Utc::now()` turned out to be ~4% of a simulated call's CPU: a
//! clock read, then a calendar conversion (days since the epoch to year, month and day,
//! with divisions by the 400-year cycle) done again for every event although the day
//! changes once in 86,400 seconds. [`now_utc`] keeps the clock read and converts the day
//! once per thread and day; the time of day is a division by 86,400.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

const SECS_PER_DAY: u64 = 86_400;

thread_local! {
    /// The last day converted on this thread: (days since the epoch, its date).
    static DAY: Cell<Option<(u64, NaiveDate)>> = const { Cell::new(None) };
}

/// The current time, as `Utc::now()` gives it (the same clock, to the nanosecond).
pub fn now_utc() -> DateTime<Utc> {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => at(since.as_secs(), since.subsec_nanos()).unwrap_or_else(Utc::now),
        // A clock set before 1970: chrono's own conversion handles it.
        Err(_) => Utc::now(),
    }
}

/// `secs` and `nanos` after the epoch, with the date taken from this thread's last day
/// when it is the same day. `None` past chrono's range.
fn at(secs: u64, nanos: u32) -> Option<DateTime<Utc>> {
    let day = secs / SECS_PER_DAY;
    let date = match DAY.get() {
        Some((cached, date)) if cached == day => date,
        _ => {
            let date = DateTime::from_timestamp(i64::try_from(day * SECS_PER_DAY).ok()?, 0)?.date_naive();
            DAY.set(Some((day, date)));
            date
        }
    };
    let time = NaiveTime::from_num_seconds_from_midnight_opt((secs % SECS_PER_DAY) as u32, nanos)?;
    Some(NaiveDateTime::new(date, time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_is_chronos_to_the_nanosecond_across_days_and_leap_years() {
        // Around midnight, the end of February in a leap year and not, a year's end, and
        // back to an earlier day (the cache must not keep a later date).
        let moments: [(u64, u32); 9] = [
            (1_709_164_799, 999_999_999), // 2024-02-28T23:59:59.999999999
            (1_709_164_800, 0),           // 2024-02-29
            (1_709_251_199, 5),           // 2024-02-29T23:59:59
            (1_709_251_200, 1),           // 2024-03-01
            (1_677_628_800, 7),           // 2023-03-01
            (1_735_689_599, 123),         // 2024-12-31T23:59:59
            (1_735_689_600, 0),           // 2025-01-01
            (0, 0),
            (4_102_444_800, 42), // 2100-01-01 (not a leap year)
        ];
        for (secs, nanos) in moments {
            let expected = DateTime::from_timestamp(secs as i64, nanos).unwrap();
            assert_eq!(at(secs, nanos), Some(expected), "{secs}.{nanos:09}");
            // Again, now from the cached day.
            assert_eq!(at(secs, nanos), Some(expected), "{secs}.{nanos:09}, cached");
        }
    }

    #[test]
    fn now_is_the_system_clock() {
        let before = Utc::now();
        let now = now_utc();
        let after = Utc::now();
        assert!(before <= now && now <= after, "{before} <= {now} <= {after}");
    }
}
