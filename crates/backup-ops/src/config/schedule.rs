//! Cron schedules in a time zone.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use backup_core::retention::parse_tz;

/// The most missed slots [`Schedule::due`] counts one by one.
pub(crate) const MAX_MISSED: u64 = 10_000;

/// A cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: croner::Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses a 5-field or 6-field (seconds first) expression.
    ///
    /// # Errors
    ///
    /// A message for a malformed expression or unknown time zone.
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, String> {
        let cron = croner::Cron::new(expr)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("`{expr}` is not a cron expression: {e}"))?;
        let tz = match tz {
            Some(t) => parse_tz(t).map_err(|e| e.to_string())?,
            None => Tz::UTC,
        };
        Ok(Schedule {
            expr: expr.to_owned(),
            cron,
            tz,
        })
    }

    /// The first time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The slot to run next when the last one handled was `after`, and how
    /// many slots were missed: when slots after `after` have already
    /// passed by `now` (the previous run, or a drill of the same job, took
    /// longer than the interval), the latest of them is due at once and
    /// the earlier ones are missed (at most 10 000 are counted,
    /// then counting restarts from `now`). `None` when the expression has
    /// no later time.
    pub fn due(&self, after: DateTime<Utc>, now: DateTime<Utc>) -> (Option<DateTime<Utc>>, u64) {
        let Some(mut slot) = self.next_after(after) else {
            return (None, 0);
        };
        let mut missed = 0;
        while slot <= now {
            match self.next_after(slot) {
                Some(n) if n <= now => {
                    missed += 1;
                    if missed >= MAX_MISSED {
                        return (self.next_after(now), missed);
                    }
                    slot = n;
                }
                _ => break,
            }
        }
        (Some(slot), missed)
    }

    /// The next `n` times after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zone_schedule() {
        let s = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        let t0 = DateTime::parse_from_rfc3339("2024-07-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // 02:00 in Berlin (CEST) is 00:00 UTC.
        assert_eq!(
            s.next_after(t0).unwrap().to_rfc3339(),
            "2024-07-02T00:00:00+00:00"
        );
        assert!(Schedule::parse("every day", None).is_err());
        assert!(Schedule::parse("0 2 * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn due_runs_the_latest_passed_slot_and_counts_the_others() {
        let s = Schedule::parse("0 * * * * *", None).unwrap();
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        // Nothing passed: the next slot, in the future.
        assert_eq!(
            s.due(at("2024-07-01T12:00:00Z"), at("2024-07-01T12:00:30Z")),
            (Some(at("2024-07-01T12:01:00Z")), 0)
        );
        // One slot passed (a run that overran into it): due at once, none missed.
        assert_eq!(
            s.due(at("2024-07-01T12:00:00Z"), at("2024-07-01T12:01:10Z")),
            (Some(at("2024-07-01T12:01:00Z")), 0)
        );
        // Three passed: the latest runs, two are missed.
        assert_eq!(
            s.due(at("2024-07-01T12:00:00Z"), at("2024-07-01T12:03:10Z")),
            (Some(at("2024-07-01T12:03:00Z")), 2)
        );
        // Every second for a day: counting stops, the next slot is after now.
        let every = Schedule::parse("* * * * * *", None).unwrap();
        let (next, missed) = every.due(at("2024-07-01T00:00:00Z"), at("2024-07-02T00:00:00Z"));
        assert_eq!(missed, MAX_MISSED);
        assert_eq!(next, Some(at("2024-07-02T00:00:01Z")));
    }
}
