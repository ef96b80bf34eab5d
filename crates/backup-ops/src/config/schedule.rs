//! Cron schedules in a time zone.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use backup_core::retention::parse_tz;

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
}
