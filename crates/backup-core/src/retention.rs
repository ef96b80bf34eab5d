//! Retention policies: which snapshots to keep and why.
//!
//! Snapshots are grouped (by default by source and job); within a group,
//! newest first, each rule keeps some snapshots:
//!
//! - `last N`: the N newest;
//! - `hourly/daily/weekly/monthly/yearly N`: the newest snapshot of each of
//!   the N most recent hours (days, ISO weeks, months, years) that have
//!   snapshots, in the policy's time zone;
//! - `within D`: every snapshot taken at most D before the group's newest;
//! - `tag T`: every snapshot carrying tag T.
//!
//! A snapshot is kept when any rule keeps it, and the newest snapshot of a
//! group is always kept. Ties (equal times) are broken by id, so results
//! are deterministic.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::snapshot::SnapshotEntry;

/// What to keep.
#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    /// Keep the N newest.
    pub last: Option<usize>,
    /// Keep the newest of each of the last N hours with snapshots.
    pub hourly: Option<usize>,
    /// Keep the newest of each of the last N days with snapshots.
    pub daily: Option<usize>,
    /// Keep the newest of each of the last N ISO weeks with snapshots.
    pub weekly: Option<usize>,
    /// Keep the newest of each of the last N months with snapshots.
    pub monthly: Option<usize>,
    /// Keep the newest of each of the last N years with snapshots.
    pub yearly: Option<usize>,
    /// Keep everything within this long before the group's newest snapshot.
    pub within: Option<Duration>,
    /// Keep snapshots with any of these tags.
    pub tags: Vec<String>,
    /// Time zone of the calendar buckets (UTC by default).
    pub tz: Option<Tz>,
}

impl RetentionPolicy {
    /// Whether the policy has at least one rule.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
            && self.within.is_none()
            && self.tags.is_empty()
    }

    /// How long the policy keeps a snapshot for `reason` (one of a
    /// [`Decision`]'s reasons), counted from the snapshot's time: N
    /// hours, days, weeks, months (31 days each) or years (366 days) for
    /// the calendar rules, the period of `within`; `None` for the rules
    /// that name no time (`last`, a tag, the newest of a group, the base
    /// of a point-in-time window).
    fn span_of(&self, reason: &str) -> Option<chrono::Duration> {
        let n = |count: Option<usize>, unit: chrono::Duration| {
            count.map(|c| unit * i32::try_from(c).unwrap_or(i32::MAX))
        };
        match reason {
            "hourly" => n(self.hourly, chrono::Duration::hours(1)),
            "daily" => n(self.daily, chrono::Duration::days(1)),
            "weekly" => n(self.weekly, chrono::Duration::weeks(1)),
            "monthly" => n(self.monthly, chrono::Duration::days(31)),
            "yearly" => n(self.yearly, chrono::Duration::days(366)),
            "within" => self.within.and_then(|d| chrono::Duration::from_std(d).ok()),
            _ => None,
        }
    }

    /// The shortest time the policy keeps a new snapshot: the shortest of
    /// its calendar rules, or `within` when that is longer; a week when
    /// the policy names no time (only `last` and tags).
    pub fn lock_period(&self) -> chrono::Duration {
        let calendar = ["hourly", "daily", "weekly", "monthly", "yearly"]
            .into_iter()
            .filter_map(|r| self.span_of(r))
            .min();
        match (calendar, self.span_of("within")) {
            (Some(c), Some(w)) => c.max(w),
            (Some(s), None) | (None, Some(s)) => s,
            (None, None) => chrono::Duration::weeks(1),
        }
    }

    /// Until when the policy will keep the snapshot of `decision`, for S3
    /// Object Lock: the latest end among the rules that keep it, a rule
    /// that names no time counting as [`RetentionPolicy::lock_period`]
    /// from `now` (it is renewed at every run). `None` when the decision
    /// removes the snapshot.
    ///
    /// The calendar rules assume a snapshot per period: a snapshot kept
    /// as one of the last 35 days is kept 35 days after it was taken.
    pub fn kept_until(&self, decision: &Decision, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        decision.keep.then(|| {
            decision
                .reasons
                .iter()
                .map(|r| match self.span_of(r) {
                    Some(span) => decision.time + span,
                    None => now + self.lock_period(),
                })
                .max()
                .unwrap_or(now)
        })
    }
}

/// How snapshots are grouped before a policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupBy {
    /// By source (kind and redacted URL).
    pub source: bool,
    /// By host.
    pub host: bool,
    /// By job name.
    pub job: bool,
    /// By the set of tags.
    pub tags: bool,
}

impl GroupBy {
    /// The default grouping: source and job.
    pub fn default_grouping() -> Self {
        GroupBy {
            source: true,
            host: false,
            job: true,
            tags: false,
        }
    }

    /// Parses `source,host,job,tags` (any subset) or `none`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown key.
    pub fn parse(s: &str) -> Result<Self> {
        let mut g = GroupBy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "source" => g.source = true,
                "host" => g.host = true,
                "job" => g.job = true,
                "tags" => g.tags = true,
                "none" => {}
                other => {
                    return Err(Error::Config(format!(
                        "unknown --group-by key `{other}`: use source, host, job, tags or none"
                    )))
                }
            }
        }
        Ok(g)
    }

    fn key(self, s: &SnapshotEntry) -> String {
        let sn = &s.snapshot;
        let mut parts = Vec::new();
        if self.source {
            parts.push(format!("source={}:{}", sn.source.kind, sn.source.url));
        }
        if self.host {
            parts.push(format!("host={}", sn.host));
        }
        if self.job {
            parts.push(format!("job={}", sn.job.as_deref().unwrap_or("")));
        }
        if self.tags {
            let mut t = sn.tags.clone();
            t.sort();
            parts.push(format!("tags={}", t.join(",")));
        }
        parts.join(" ")
    }
}

/// Maps a local time to its calendar bucket (hour, day, week, ...).
type BucketFn = fn(DateTime<Tz>) -> i64;

/// The decision for one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: Id,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Its group.
    pub group: String,
    /// Whether it is kept.
    pub keep: bool,
    /// The rules that keep it (empty when it goes).
    pub reasons: Vec<String>,
}

/// Applies `policy` to `snapshots`; returns a decision per snapshot, groups
/// in key order, newest first within a group.
///
/// # Errors
///
/// [`Error::Config`] when the policy has no rule (which would remove
/// everything but the newest snapshots).
pub fn apply(
    snapshots: &[SnapshotEntry],
    policy: &RetentionPolicy,
    group_by: GroupBy,
) -> Result<Vec<Decision>> {
    if policy.is_empty() {
        return Err(Error::Config(
            "no retention rule given: use --keep-last, --keep-daily, ... or name snapshots to forget".to_owned(),
        ));
    }
    let tz = policy.tz.unwrap_or(Tz::UTC);
    let mut groups: BTreeMap<String, Vec<&SnapshotEntry>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_by.key(s)).or_default().push(s);
    }
    let mut out = Vec::new();
    for (group, mut list) in groups {
        list.sort_by(|a, b| b.snapshot.time.cmp(&a.snapshot.time).then(b.id.cmp(&a.id)));
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); list.len()];
        reasons[0].push("newest of its group".to_owned());
        if let Some(n) = policy.last {
            for r in reasons.iter_mut().take(n) {
                r.push("last".to_owned());
            }
        }
        let buckets: [(&str, Option<usize>, BucketFn); 5] = [
            ("hourly", policy.hourly, |t| {
                i64::from(t.year()) * 1_000_000 + i64::from(t.ordinal()) * 100 + i64::from(t.hour())
            }),
            ("daily", policy.daily, |t| {
                i64::from(t.year()) * 1000 + i64::from(t.ordinal())
            }),
            ("weekly", policy.weekly, |t| {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }),
            ("monthly", policy.monthly, |t| {
                i64::from(t.year()) * 100 + i64::from(t.month())
            }),
            ("yearly", policy.yearly, |t| i64::from(t.year())),
        ];
        for (name, count, bucket) in buckets {
            let Some(n) = count else { continue };
            let mut seen = HashSet::new();
            for (i, s) in list.iter().enumerate() {
                if seen.len() >= n {
                    break;
                }
                let key = bucket(tz.from_utc_datetime(&s.snapshot.time.naive_utc()));
                if seen.insert(key) {
                    reasons[i].push(name.to_owned());
                }
            }
        }
        if let Some(d) = policy.within {
            let newest = list[0].snapshot.time;
            let span = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            for (i, s) in list.iter().enumerate() {
                if newest - s.snapshot.time <= span {
                    reasons[i].push("within".to_owned());
                }
            }
        }
        for (i, s) in list.iter().enumerate() {
            for t in &policy.tags {
                if s.snapshot.tags.contains(t) {
                    reasons[i].push(format!("tag {t}"));
                }
            }
        }
        for (s, r) in list.iter().zip(reasons) {
            out.push(Decision {
                id: s.id,
                time: s.snapshot.time,
                group: group.clone(),
                keep: !r.is_empty(),
                reasons: r,
            });
        }
    }
    Ok(out)
}

/// Parses a duration such as `7d`, `2w`, `1y 6months`, `36h`.
///
/// # Errors
///
/// [`Error::Config`] when the text is not a duration.
pub fn parse_duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s).map_err(|e| {
        Error::Config(format!(
            "`{s}` is not a duration ({e}): use for example 36h, 7d, 2w, 1y"
        ))
    })
}

/// Parses an IANA time zone name such as `Europe/Berlin`.
///
/// # Errors
///
/// [`Error::Config`] for an unknown zone.
pub fn parse_tz(s: &str) -> Result<Tz> {
    s.parse::<Tz>().map_err(|_| {
        Error::Config(format!(
            "unknown time zone `{s}`: use an IANA name such as Europe/Berlin"
        ))
    })
}

/// The UTC instant of a wall-clock time in `tz` (the earlier one when the
/// time is ambiguous); for tests and imports.
pub fn local_to_utc(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Option<DateTime<Utc>> {
    tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Snapshot, SnapshotStats, SourceDescriptor, SNAPSHOT_VERSION};

    fn snap(n: u8, time: &str, tags: &[&str], source: &str) -> SnapshotEntry {
        let mut id = [0u8; 32];
        id[0] = n;
        SnapshotEntry {
            id: Id(id),
            snapshot: Snapshot {
                version: SNAPSHOT_VERSION,
                time: DateTime::parse_from_rfc3339(time)
                    .unwrap()
                    .with_timezone(&Utc),
                host: "h".into(),
                user: "u".into(),
                source: SourceDescriptor {
                    kind: "files".into(),
                    url: source.into(),
                },
                job: None,
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                parent: None,
                copy_of: None,
                rewritten: None,
                tree: Id::default(),
                excludes: vec![],
                includes: vec![],
                stats: SnapshotStats::default(),
                streams: vec![],
                warnings: vec![],
                metadata: serde_json::Value::Null,
                program: String::new(),
            },
        }
    }

    /// Applies a policy and returns the numbers of the kept snapshots,
    /// sorted.
    fn kept(list: &[SnapshotEntry], policy: &RetentionPolicy) -> Vec<u8> {
        let mut k: Vec<u8> = apply(list, policy, GroupBy::default_grouping())
            .unwrap()
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id.0[0])
            .collect();
        k.sort_unstable();
        k
    }

    fn daily_series() -> Vec<SnapshotEntry> {
        // Two snapshots a day from 2023-12-29 to 2024-01-03, at 01:00 and 23:00 UTC.
        let mut v = Vec::new();
        let days = [
            "2023-12-29",
            "2023-12-30",
            "2023-12-31",
            "2024-01-01",
            "2024-01-02",
            "2024-01-03",
        ];
        let mut n = 1;
        for d in days {
            v.push(snap(n, &format!("{d}T01:00:00Z"), &[], "/a"));
            v.push(snap(n + 1, &format!("{d}T23:00:00Z"), &[], "/a"));
            n += 2;
        }
        v
    }

    #[test]
    fn keep_last_and_daily() {
        let v = daily_series();
        let p = RetentionPolicy {
            last: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&v, &p), vec![10, 11, 12]);
        let p = RetentionPolicy {
            daily: Some(3),
            ..Default::default()
        };
        // The newest of each of the last three days: the 23:00 ones.
        assert_eq!(kept(&v, &p), vec![8, 10, 12]);
        let p = RetentionPolicy {
            daily: Some(100),
            ..Default::default()
        };
        assert_eq!(kept(&v, &p), vec![2, 4, 6, 8, 10, 12]);
    }

    #[test]
    fn monthly_and_yearly_cross_the_year_boundary() {
        let v = daily_series();
        let p = RetentionPolicy {
            monthly: Some(2),
            ..Default::default()
        };
        // January 2024 -> 2024-01-03 23:00; December 2023 -> 2023-12-31 23:00.
        assert_eq!(kept(&v, &p), vec![6, 12]);
        let p = RetentionPolicy {
            yearly: Some(5),
            ..Default::default()
        };
        assert_eq!(kept(&v, &p), vec![6, 12]);
    }

    #[test]
    fn weekly_uses_iso_weeks() {
        // 2024-01-01 is a Monday; 2023-12-31 a Sunday (ISO week 2023-52).
        let v = vec![
            snap(1, "2023-12-30T12:00:00Z", &[], "/a"),
            snap(2, "2023-12-31T12:00:00Z", &[], "/a"),
            snap(3, "2024-01-01T12:00:00Z", &[], "/a"),
            snap(4, "2024-01-07T12:00:00Z", &[], "/a"),
            snap(5, "2024-01-08T12:00:00Z", &[], "/a"),
        ];
        let p = RetentionPolicy {
            weekly: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&v, &p), vec![2, 4, 5]);
    }

    #[test]
    fn hourly_and_within() {
        let v = vec![
            snap(1, "2024-03-01T10:05:00Z", &[], "/a"),
            snap(2, "2024-03-01T10:55:00Z", &[], "/a"),
            snap(3, "2024-03-01T11:10:00Z", &[], "/a"),
            snap(4, "2024-03-01T13:00:00Z", &[], "/a"),
        ];
        let p = RetentionPolicy {
            hourly: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&v, &p), vec![3, 4]);
        let p = RetentionPolicy {
            within: Some(parse_duration("2h 30m").unwrap()),
            ..Default::default()
        };
        // Within 2h30 of 13:00: 10:55 and later (10:30 is the limit).
        assert_eq!(kept(&v, &p), vec![2, 3, 4]);
    }

    #[test]
    fn ties_are_broken_by_id_and_the_newest_is_always_kept() {
        let v = vec![
            snap(1, "2024-05-01T00:00:00Z", &[], "/a"),
            snap(2, "2024-05-01T00:00:00Z", &[], "/a"),
            snap(3, "2024-04-01T00:00:00Z", &[], "/a"),
        ];
        let p = RetentionPolicy {
            daily: Some(1),
            ..Default::default()
        };
        assert_eq!(kept(&v, &p), vec![2]);
        let p = RetentionPolicy {
            tags: vec!["none".into()],
            ..Default::default()
        };
        assert_eq!(kept(&v, &p), vec![2], "the newest of a group always stays");
    }

    #[test]
    fn tags_and_groups() {
        let v = vec![
            snap(1, "2024-01-01T00:00:00Z", &["keep"], "/a"),
            snap(2, "2024-01-02T00:00:00Z", &[], "/a"),
            snap(3, "2024-01-03T00:00:00Z", &[], "/a"),
            snap(4, "2024-01-01T00:00:00Z", &[], "/b"),
            snap(5, "2024-01-02T00:00:00Z", &[], "/b"),
        ];
        let p = RetentionPolicy {
            last: Some(1),
            tags: vec!["keep".into()],
            ..Default::default()
        };
        assert_eq!(kept(&v, &p), vec![1, 3, 5]);
        // Grouping by nothing: one group, one newest.
        let all: Vec<u8> = apply(
            &v,
            &RetentionPolicy {
                last: Some(1),
                ..Default::default()
            },
            GroupBy::parse("none").unwrap(),
        )
        .unwrap()
        .into_iter()
        .filter(|d| d.keep)
        .map(|d| d.id.0[0])
        .collect();
        assert_eq!(all, vec![3]);
        assert!(GroupBy::parse("colour").is_err());
        assert!(apply(&v, &RetentionPolicy::default(), GroupBy::default_grouping()).is_err());
    }

    #[test]
    fn daylight_saving_changes_with_a_time_zone() {
        let tz = parse_tz("Europe/Berlin").unwrap();
        // 2024-03-31: clocks go from 02:00 to 03:00 (UTC+1 to UTC+2).
        // 22:30 UTC on 03-30 is 23:30 local on 03-30; 22:30 UTC on 03-31 is
        // 00:30 local on 04-01. In UTC both would be separate days anyway;
        // 23:30 UTC on 03-30 is 00:30 local on 03-31 (same local day as the
        // 03-31 morning snapshot).
        let v = vec![
            snap(1, "2024-03-30T22:30:00Z", &[], "/a"),
            snap(2, "2024-03-30T23:30:00Z", &[], "/a"),
            snap(3, "2024-03-31T08:00:00Z", &[], "/a"),
            snap(4, "2024-03-31T22:30:00Z", &[], "/a"),
        ];
        let utc = RetentionPolicy {
            daily: Some(10),
            ..Default::default()
        };
        assert_eq!(kept(&v, &utc), vec![2, 4]);
        let local = RetentionPolicy {
            daily: Some(10),
            tz: Some(tz),
            ..Default::default()
        };
        // Local days: 03-30 {1}, 03-31 {2, 3}, 04-01 {4}.
        assert_eq!(kept(&v, &local), vec![1, 3, 4]);
        assert_eq!(
            local_to_utc(tz, 2024, 10, 27, 2, 30).unwrap().to_rfc3339(),
            "2024-10-27T00:30:00+00:00",
            "an ambiguous local time resolves to the earlier instant"
        );
        assert!(parse_tz("Mars/Olympus").is_err());
    }

    #[test]
    fn kept_until_follows_the_longest_rule_and_renews_untimed_ones() {
        let v = vec![
            snap(1, "2024-01-01T10:00:00Z", &[], "/a"),
            snap(2, "2024-01-02T10:00:00Z", &["gold"], "/a"),
            snap(3, "2024-01-03T10:00:00Z", &[], "/a"),
        ];
        let policy = RetentionPolicy {
            daily: Some(35),
            weekly: Some(2),
            tags: vec!["gold".into()],
            ..Default::default()
        };
        assert_eq!(policy.lock_period(), chrono::Duration::weeks(2));
        let now = DateTime::parse_from_rfc3339("2024-01-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let decisions = apply(&v, &policy, GroupBy::default_grouping()).unwrap();
        let until = |n: u8| {
            let d = decisions.iter().find(|d| d.id.0[0] == n).unwrap();
            policy.kept_until(d, now).map(|t| t.to_rfc3339())
        };
        // A daily snapshot is kept 35 days after it was taken; a tagged
        // one at least the lock period from now, renewed at each run.
        assert_eq!(until(1).as_deref(), Some("2024-02-05T10:00:00+00:00"));
        assert_eq!(until(2).as_deref(), Some("2024-02-06T10:00:00+00:00"));
        assert_eq!(until(3).as_deref(), Some("2024-02-07T10:00:00+00:00"));
        let within = RetentionPolicy {
            hourly: Some(24),
            within: Some(Duration::from_secs(3 * 86_400)),
            ..Default::default()
        };
        assert_eq!(within.lock_period(), chrono::Duration::days(3));
        let last = RetentionPolicy {
            last: Some(2),
            ..Default::default()
        };
        assert_eq!(last.lock_period(), chrono::Duration::weeks(1));
        let decisions = apply(&v, &last, GroupBy::default_grouping()).unwrap();
        let gone = decisions.iter().find(|d| !d.keep).unwrap();
        assert_eq!(last.kept_until(gone, now), None);
        let kept = decisions.iter().find(|d| d.keep).unwrap();
        assert_eq!(
            last.kept_until(kept, now),
            Some(now + chrono::Duration::weeks(1))
        );
    }
}
