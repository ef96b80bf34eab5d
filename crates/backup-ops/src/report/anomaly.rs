//! Anomalies worth an alert: a run much slower than usual, a run that
//! adds, stores or holds far more (or far less) than usual, a repository
//! running out of space.

use backup_core::util::human_bytes;

use super::history::{JobHistory, Run};
use crate::config::{AlertSettings, Threshold};

/// Sizes below this are never compared: a job that adds nothing on most
/// days and a few kilobytes on one is not an anomaly.
const SIZE_FLOOR: f64 = 1024.0 * 1024.0;

/// The median of `values` (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

/// The baseline of `run`: the job's earlier successful runs, at most
/// `baseline_runs`; `None` while there are fewer than `min_runs`.
fn baseline<'a>(job: &'a JobHistory, run: &Run, s: &AlertSettings) -> Option<Vec<&'a Run>> {
    let b = job.baseline(s.baseline_runs, Some(run.time));
    (b.len() >= s.min_runs).then_some(b)
}

/// A `duration_anomaly`: `run` took more than `duration_factor` times the
/// median duration of the baseline (and at least `min_duration`).
pub fn duration_anomaly(job: &JobHistory, run: &Run, s: &AlertSettings) -> Option<String> {
    if !run.ok || run.duration_seconds < s.min_duration.as_secs_f64() {
        return None;
    }
    let b = baseline(job, run, s)?;
    let m = median(&b.iter().map(|r| r.duration_seconds).collect::<Vec<_>>())?;
    (run.duration_seconds > s.duration_factor * m).then(|| {
        format!(
            "the run took {:.1}s, {:.1} times the median of the last {} runs ({:.1}s; the limit is {}x)",
            run.duration_seconds,
            run.duration_seconds / m.max(f64::EPSILON),
            b.len(),
            m,
            s.duration_factor
        )
    })
}

/// A `size_anomaly`: `run` added or stored more than `size_factor` times
/// the median of the baseline, or its snapshot holds less than the
/// median divided by `size_factor` (data gone from the source). Sizes
/// under 1 MiB are not compared.
pub fn size_anomaly(job: &JobHistory, run: &Run, s: &AlertSettings) -> Option<String> {
    if !run.ok {
        return None;
    }
    let b = baseline(job, run, s)?;
    let med = |f: fn(&Run) -> u64| median(&b.iter().map(|r| f(r) as f64).collect::<Vec<_>>());
    let mut found = Vec::new();
    for (what, value, m) in [
        ("added", run.bytes_added, med(|r| r.bytes_added)?),
        ("stored", run.bytes_stored, med(|r| r.bytes_stored)?),
    ] {
        let reference = m.max(SIZE_FLOOR);
        if value as f64 > s.size_factor * reference {
            found.push(format!(
                "{what} {} where the median of the last {} runs is {} (the limit is {}x)",
                human_bytes(value),
                b.len(),
                human_bytes(m as u64),
                s.size_factor
            ));
        }
    }
    let logical = med(|r| r.logical_bytes)?;
    if logical >= SIZE_FLOOR && (run.logical_bytes as f64) < logical / s.size_factor {
        found.push(format!(
            "the snapshot holds {} where the median of the last {} runs is {}: data may be missing from the source",
            human_bytes(run.logical_bytes),
            b.len(),
            human_bytes(logical as u64)
        ));
    }
    (!found.is_empty()).then(|| found.join("; "))
}

/// The free and total bytes of the file system holding a local
/// repository (`None` for other repositories or when unknown).
pub fn local_space(repository_url: &str) -> Option<(u64, u64)> {
    let backup_storage::StorageUrl::Local { path } =
        backup_storage::StorageUrl::parse(repository_url).ok()?
    else {
        return None;
    };
    let st = nix::sys::statvfs::statvfs(&path).ok()?;
    let unit = st.fragment_size().max(1) as u64;
    Some((
        st.blocks_available() as u64 * unit,
        st.blocks() as u64 * unit,
    ))
}

/// A `storage_low` message when `free` of `total` bytes is under
/// `min_free`.
pub fn storage_low(name: &str, free: u64, total: u64, min_free: Threshold) -> Option<String> {
    let limit = min_free.bytes_of(total);
    (free < limit).then(|| {
        format!(
            "repository {name} has {} free of {} ({:.1}%), under its limit of {}",
            human_bytes(free),
            human_bytes(total),
            free as f64 * 100.0 / total.max(1) as f64,
            match min_free {
                Threshold::Percent(p) => format!("{p}%"),
                Threshold::Bytes(b) => human_bytes(b),
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn run(i: i64, secs: f64, added: u64, logical: u64) -> Run {
        let mut r = Run::failed(
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc)
                + chrono::Duration::hours(i),
            "",
        );
        r.ok = true;
        r.error = None;
        r.duration_seconds = secs;
        r.bytes_added = added;
        r.bytes_stored = added / 2;
        r.logical_bytes = logical;
        r
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn anomalies_against_the_baseline() {
        let s = AlertSettings::default();
        let mut job = JobHistory::default();
        let mb = 1 << 20;
        for i in 0..4 {
            job.push_run(run(i, 10.0, 5 * mb, 100 * mb));
        }
        // Fewer than min_runs (5): nothing.
        assert!(duration_anomaly(&job, &run(10, 100.0, 5 * mb, 100 * mb), &s).is_none());
        job.push_run(run(4, 12.0, 6 * mb, 100 * mb));
        let slow = run(10, 25.0, 5 * mb, 100 * mb);
        let msg = duration_anomaly(&job, &slow, &s).unwrap();
        assert!(msg.contains("median of the last 5 runs (10.0s"), "{msg}");
        assert!(duration_anomaly(&job, &run(10, 19.0, 5 * mb, 100 * mb), &s).is_none());
        // Runs under min_duration never are.
        let mut quick = JobHistory::default();
        for i in 0..6 {
            quick.push_run(run(i, 0.1, 0, 0));
        }
        assert!(duration_anomaly(&quick, &run(10, 0.9, 0, 0), &s).is_none());

        let big = run(10, 10.0, 40 * mb, 130 * mb);
        let msg = size_anomaly(&job, &big, &s).unwrap();
        assert!(msg.contains("added 40.0 MiB"), "{msg}");
        assert!(size_anomaly(&job, &run(10, 10.0, 12 * mb, 100 * mb), &s).is_none());
        let shrunk = run(10, 10.0, 0, 20 * mb);
        let msg = size_anomaly(&job, &shrunk, &s).unwrap();
        assert!(msg.contains("data may be missing"), "{msg}");
        // Tiny jobs are never compared.
        assert!(size_anomaly(&quick, &run(10, 0.1, 500_000, 0), &s).is_none());
    }

    #[test]
    fn space() {
        assert!(storage_low("r", 10, 100, Threshold::Percent(20.0)).is_some());
        assert!(storage_low("r", 30, 100, Threshold::Percent(20.0)).is_none());
        assert!(storage_low("r", 10, 100, Threshold::Bytes(5)).is_none());
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = local_space(dir.path().to_str().unwrap()).unwrap();
        assert!(total >= free && total > 0);
        assert!(local_space("s3://bucket/prefix").is_none());
    }
}
