//! The kinds of capture streams and their positions: which stream a base
//! snapshot belongs to and where replay continues after it, how positions
//! read and which time they stand for, and how a restore's target
//! becomes a position.

use backup_core::snapshot::Snapshot;
use backup_core::target::{RecoveryPoint, RestoreOptions};
use backup_core::{Error, Result};
use chrono::{DateTime, Utc};

use crate::Kind;

/// Where a base snapshot sits in a capture stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePoint {
    /// The identity of the stream (as the follower derives it).
    pub identity: String,
    /// The first position replay applies after the snapshot (everything
    /// before is in it).
    pub from: Position,
    /// The time the snapshot is consistent at, when known.
    pub time: Option<DateTime<Utc>>,
}

/// What a kind's stream and its parts are called in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    /// What is captured (`WAL`, `oplog`, `replication stream`).
    pub stream: &'static str,
    /// What identifies a source's stream (`cluster`, `replica set`).
    pub identity: &'static str,
    /// What a position is (`LSN`, `oplog timestamp`).
    pub position: &'static str,
    /// Where changes wait while capture is down, and what happens then.
    pub kept_in: &'static str,
}

/// The kinds of capture streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CaptureKind {
    /// MongoDB's oplog (`mongodb-oplog`).
    MongodbOplog,
    /// Redis's replication stream (`redis-stream`). It carries no times:
    /// pieces hold each command's arrival time, so a time becomes a
    /// position only by reading them.
    RedisStream,
}

impl CaptureKind {
    /// Every kind this build knows.
    pub const ALL: [CaptureKind; 2] = [CaptureKind::MongodbOplog, CaptureKind::RedisStream];

    /// The kind recorded in capture records.
    pub fn name(self) -> &'static str {
        match self {
            CaptureKind::MongodbOplog => "mongodb-oplog",
            CaptureKind::RedisStream => "redis-stream",
        }
    }

    /// The kind of a record's `kind` field.
    pub fn of(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind of source whose snapshots are this stream's bases.
    pub fn source_kind(self) -> Kind {
        match self {
            CaptureKind::MongodbOplog => Kind::Mongodb,
            CaptureKind::RedisStream => Kind::Redis,
        }
    }

    /// What the stream and its parts are called in messages.
    pub fn words(self) -> Words {
        match self {
            CaptureKind::MongodbOplog => Words {
                stream: "oplog",
                identity: "replica set",
                position: "oplog timestamp",
                kept_in: "the oplog until it rolls over (then the capture records a gap)",
            },
            CaptureKind::RedisStream => Words {
                stream: "replication stream",
                identity: "replication id",
                position: "replication offset",
                kept_in:
                    "the replication backlog until it rolls over (then the capture records a gap)",
            },
        }
    }

    /// Where `snapshot` sits in a stream of this kind, when it is a base
    /// of one (a consistent snapshot of a source that has such a stream).
    ///
    /// Safety backups (tagged `safety-backup`, taken of a restore's target
    /// before it is replaced) are nobody's base: they are of whatever the
    /// target held, which a point-in-time restore of the source must not
    /// start from.
    pub fn base_point(self, snapshot: &Snapshot) -> Option<BasePoint> {
        if snapshot.source.kind != self.source_kind().name()
            || snapshot.tags.iter().any(|t| t == "safety-backup")
        {
            return None;
        }
        match self {
            CaptureKind::MongodbOplog => mongo_base_point(snapshot),
            CaptureKind::RedisStream => redis_base_point(snapshot),
        }
    }

    /// Whether a position tells its time ([`Position::time`]); otherwise
    /// a time target is placed by the pieces' arrival times.
    pub fn timed_positions(self) -> bool {
        matches!(self, CaptureKind::MongodbOplog)
    }

    /// The last position the target of `opts` includes (`at`, or a
    /// point in this kind's terms): for a time, the last position at or
    /// before it when the kind can tell from positions alone (`None`
    /// otherwise, and when `opts` has no target).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a point of another kind (`--at-lsn` on an
    /// oplog) or a time outside the kind's range.
    pub fn until(self, opts: &RestoreOptions) -> Result<Option<Position>> {
        let wrong = |point, owner: &str, takes: &str| {
            Err(Error::Config(format!(
                "{} is a {} target, not a {owner} one; a {owner} restore takes --at TIME or {takes}",
                point_flag(point),
                point_owner(point)
            )))
        };
        match (self, &opts.at, &opts.point) {
            (Self::RedisStream, _, Some(RecoveryPoint::ReplOffset(o))) => {
                Ok(Some(Position::Offset(*o)))
            }
            (Self::RedisStream, _, Some(other)) => wrong(other, "Redis", "--at-offset N"),
            // MongoDB timestamps count whole seconds: every entry of the
            // second TIME falls in.
            (Self::MongodbOplog, Some(t), _) => {
                let seconds = u32::try_from(t.timestamp()).map_err(|_| {
                    Error::Config(format!(
                        "{t} is outside the range of MongoDB timestamps (1970 to 2106)"
                    ))
                })?;
                Ok(Some(Position::Oplog {
                    seconds,
                    increment: u32::MAX,
                }))
            }
            (Self::MongodbOplog, None, &Some(RecoveryPoint::OplogTs { seconds, increment })) => {
                Ok(Some(Position::Oplog { seconds, increment }))
            }
            (Self::MongodbOplog, None, Some(other)) => {
                wrong(other, "MongoDB", "--at-ts SECONDS:INCREMENT")
            }
            _ => Ok(None),
        }
    }
}

/// A position in a change stream, typed by the kind of stream. Capture
/// records store positions as fixed-width hexadecimal text
/// ([`Position::record`]), which sorts like the positions within a
/// stream; people read them as [`Position`]'s `Display` writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Position {
    /// PostgreSQL WAL: a byte position (LSN) on a timeline.
    Wal {
        /// The timeline.
        timeline: u32,
        /// The byte position.
        lsn: u64,
    },
    /// MongoDB oplog: an entry's timestamp.
    Oplog {
        /// Seconds since the epoch.
        seconds: u32,
        /// The entry's ordinal within its second.
        increment: u32,
    },
    /// Redis: the replication offset (`master_repl_offset`) after a
    /// command.
    Offset(u64),
}

impl Position {
    /// As capture records store it: 8 hex digits of the timeline then 16
    /// of the LSN (WAL), 8 of the seconds then 8 of the increment
    /// (oplog), 16 of the offset (Redis).
    pub fn record(self) -> String {
        match self {
            Position::Wal { timeline, lsn } => format!("{timeline:08X}{lsn:016X}"),
            Position::Oplog { seconds, increment } => format!("{seconds:08X}{increment:08X}"),
            Position::Offset(o) => format!("{o:016X}"),
        }
    }

    /// The position a record of capture `kind` stores as `record`
    /// (`None` when it is not one: another kind's, or damaged).
    pub fn parse(kind: CaptureKind, record: &str) -> Option<Self> {
        match kind {
            CaptureKind::MongodbOplog => oplog_parts(record)
                .map(|(seconds, increment)| Position::Oplog { seconds, increment }),
            CaptureKind::RedisStream => position_offset(record).map(Position::Offset),
        }
    }

    /// The position a record of the capture kind named `capture`
    /// (`postgres-wal`, `mongodb-oplog`, `redis-stream`) stores as
    /// `record`.
    pub fn of_record(capture: &str, record: &str) -> Option<Self> {
        if capture == "postgres-wal" {
            return Self::parse_wal(record);
        }
        Self::parse(CaptureKind::of(capture)?, record)
    }

    /// A WAL position as records store it.
    pub fn parse_wal(record: &str) -> Option<Self> {
        let (timeline, lsn) = hex_pair(record, 8, 16)?;
        let timeline = timeline as u32;
        Some(Position::Wal { timeline, lsn })
    }

    /// The position right after this one (the same at the end of the
    /// range).
    #[must_use]
    pub fn next(self) -> Self {
        self.step(|v| v.saturating_add(1))
    }

    /// The position right before this one (for a base: its consistent
    /// point, from the first position replay applies; the same at the
    /// start of the range).
    #[must_use]
    pub fn prev(self) -> Self {
        self.step(|v| v.saturating_sub(1))
    }

    /// The position `by` moves this one to, within its timeline (an
    /// oplog timestamp counts as seconds then increment).
    fn step(self, by: impl Fn(u64) -> u64) -> Self {
        match self {
            Position::Wal { timeline, lsn } => Position::Wal {
                timeline,
                lsn: by(lsn),
            },
            Position::Oplog { seconds, increment } => {
                let v = by(u64::from(seconds) << 32 | u64::from(increment));
                Position::Oplog {
                    seconds: (v >> 32) as u32,
                    increment: v as u32,
                }
            }
            Position::Offset(o) => Position::Offset(by(o)),
        }
    }

    /// As PostgreSQL, MongoDB and Redis write it, without the timeline of
    /// a WAL position (`0/3000060`, `1700000000:5`, `123456`): how
    /// listings show it.
    pub fn short(self) -> String {
        match self {
            Position::Wal { lsn, .. } => format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF),
            other => other.to_string(),
        }
    }

    /// The position with its time, when it tells one, for messages.
    pub fn describe(self) -> String {
        match self.time() {
            Some(t) => format!("{} ({self})", t.format("%Y-%m-%dT%H:%M:%SZ")),
            None => self.to_string(),
        }
    }

    /// The timeline of a WAL position.
    pub fn timeline(self) -> Option<u32> {
        match self {
            Position::Wal { timeline, .. } => Some(timeline),
            _ => None,
        }
    }

    /// The time the position stands for, when it tells one (oplog).
    pub fn time(self) -> Option<DateTime<Utc>> {
        match self {
            Position::Oplog { seconds, .. } => DateTime::from_timestamp(i64::from(seconds), 0),
            _ => None,
        }
    }
}

impl std::fmt::Display for Position {
    /// `0/3000060 on timeline 1`, `1700000000:5`, `123456`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Wal { timeline, lsn } => write!(
                f,
                "{:X}/{:X} on timeline {timeline}",
                lsn >> 32,
                lsn & 0xFFFF_FFFF
            ),
            Position::Oplog { seconds, increment } => write!(f, "{seconds}:{increment}"),
            Position::Offset(o) => write!(f, "{o}"),
        }
    }
}

impl serde::Serialize for Position {
    /// As [`Position::short`] writes it (a WAL position's timeline is a
    /// field of its own in listings).
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.short())
    }
}

/// The option that gives `point`, for messages.
pub fn point_flag(point: &RecoveryPoint) -> &'static str {
    match point {
        RecoveryPoint::Lsn(_) => "--at-lsn",
        RecoveryPoint::Xid(_) => "--at-xid",
        RecoveryPoint::Name(_) => "--at-name",
        RecoveryPoint::Immediate => "--immediate",
        RecoveryPoint::OplogTs { .. } => "--at-ts",
        RecoveryPoint::ReplOffset(_) => "--at-offset",
    }
}

/// The kind of source whose restores take `point`, for messages.
pub fn point_owner(point: &RecoveryPoint) -> &'static str {
    match point {
        RecoveryPoint::Lsn(_)
        | RecoveryPoint::Xid(_)
        | RecoveryPoint::Name(_)
        | RecoveryPoint::Immediate => "PostgreSQL",
        RecoveryPoint::OplogTs { .. } => "MongoDB",
        RecoveryPoint::ReplOffset(_) => "Redis",
    }
}

/// The offset of a Redis position.
pub fn position_offset(position: &str) -> Option<u64> {
    (position.len() == 16)
        .then(|| u64::from_str_radix(position, 16).ok())
        .flatten()
}

/// The identities of the capture streams `snapshot` is a base of: a
/// replica set (MongoDB), a cluster's system identifier (a physical
/// PostgreSQL base backup). Empty for snapshots that are nobody's base.
pub fn base_identities(snapshot: &Snapshot) -> Vec<String> {
    let out = CaptureKind::ALL
        .iter()
        .filter_map(|k| k.base_point(snapshot))
        .map(|p| p.identity);
    #[cfg(feature = "postgres")]
    let out = out.chain(
        crate::postgres::physical::PhysicalMeta::of(&snapshot.metadata)
            .and_then(std::result::Result::ok)
            .map(|m| m.system_identifier),
    );
    out.collect()
}

/// The seconds and increment of an oplog position.
pub(crate) fn oplog_parts(position: &str) -> Option<(u32, u32)> {
    hex_pair(position, 8, 8).map(|(t, i)| (t as u32, i as u32))
}

/// The two numbers of a record of `a` then `b` hex digits.
fn hex_pair(record: &str, a: usize, b: usize) -> Option<(u64, u64)> {
    let hex = |s: Option<&str>| u64::from_str_radix(s?, 16).ok();
    (record.len() == a + b).then(|| Some((hex(record.get(..a))?, hex(record.get(a..))?)))?
}

/// The base point of a MongoDB snapshot: its replica set and the entry
/// after its oplog window's end.
fn mongo_base_point(snapshot: &Snapshot) -> Option<BasePoint> {
    let meta = &snapshot.metadata;
    if !meta.get("consistent")?.as_bool()? {
        return None;
    }
    let set = meta.get("replica_set")?;
    let name = set.get("name")?.as_str()?;
    let identity = match set.get("id").and_then(serde_json::Value::as_str) {
        Some(id) => format!("{name}/{id}"),
        None => name.to_owned(),
    };
    let end = meta.get("oplog")?.get("end")?;
    let seconds = u32::try_from(end.get("t")?.as_u64()?).ok()?;
    let increment = u32::try_from(end.get("i")?.as_u64()?).ok()?;
    let end = Position::Oplog { seconds, increment };
    Some(BasePoint {
        identity,
        from: end.next(),
        time: end.time(),
    })
}

/// The base point of a Redis snapshot taken over the replication
/// protocol: the master's replication id and the first offset after the
/// RDB. Key-mode snapshots (`DUMP`s, not one consistent point) are nobody's
/// base.
fn redis_base_point(snapshot: &Snapshot) -> Option<BasePoint> {
    let meta = &snapshot.metadata;
    if meta.get("mode")?.as_str()? != "rdb" {
        return None;
    }
    let repl = meta.get("replication")?;
    let replid = repl.get("replid")?.as_str()?;
    let offset = repl.get("offset")?.as_u64()?;
    let time = repl
        .get("time_ms")
        .and_then(serde_json::Value::as_i64)
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or(snapshot.time);
    Some(BasePoint {
        identity: replid.to_owned(),
        from: Position::Offset(offset.saturating_add(1)),
        time: Some(time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oplog_positions() {
        let k = CaptureKind::MongodbOplog;
        let p = |seconds, increment| Position::Oplog { seconds, increment };
        assert_eq!(
            Position::parse(k, "6553F10000000005"),
            Some(p(1_700_000_000, 5))
        );
        assert_eq!(p(1_700_000_000, 5).record(), "6553F10000000005");
        assert_eq!(p(1_700_000_000, 5).to_string(), "1700000000:5");
        assert_eq!(p(1_700_000_000, 5).next(), p(1_700_000_000, 6));
        assert_eq!(p(1_700_000_000, u32::MAX).next(), p(1_700_000_001, 0));
        assert_eq!(p(1_700_000_000, 5).prev(), p(1_700_000_000, 4));
        assert_eq!(p(1_700_000_001, 0).prev(), p(1_700_000_000, u32::MAX));
        assert_eq!(
            p(1_700_000_000, 5).time().unwrap().timestamp(),
            1_700_000_000
        );
        let ts = RestoreOptions {
            point: Some(RecoveryPoint::OplogTs {
                seconds: 1_700_000_000,
                increment: 5,
            }),
            ..RestoreOptions::default()
        };
        assert_eq!(k.until(&ts).unwrap(), Some(p(1_700_000_000, 5)));
        let t = DateTime::from_timestamp(1_700_000_000, 900_000_000).unwrap();
        let at = RestoreOptions {
            at: Some(t),
            ..RestoreOptions::default()
        };
        assert_eq!(k.until(&at).unwrap(), Some(p(1_700_000_000, u32::MAX)));
        let lsn = RestoreOptions {
            point: Some(RecoveryPoint::Lsn("0/1".into())),
            ..RestoreOptions::default()
        };
        assert!(k.until(&lsn).is_err());
        assert_eq!(CaptureKind::of("mongodb-oplog"), Some(k));
        assert_eq!(CaptureKind::of("other"), None);
        let wal = Position::Wal {
            timeline: 2,
            lsn: 0x1_0300_0060,
        };
        assert_eq!(wal.short(), "1/3000060");
        assert_eq!(wal.to_string(), "1/3000060 on timeline 2");
        assert_eq!(Position::parse_wal(&wal.record()), Some(wal));
        assert_eq!(Position::Offset(7).prev(), Position::Offset(6));
    }
}
