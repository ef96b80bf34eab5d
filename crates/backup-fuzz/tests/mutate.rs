//! The fuzz targets in the test suite (docs/FUZZING.md): each target runs
//! its checked-in seeds (`fuzz/corpus/TARGET`), then inputs made by
//! mutating them, for `BACKUP_FUZZ_SECONDS` (default 10) per target.
//! No coverage guidance (that is `scripts/fuzz.sh`'s libFuzzer build, for
//! runs of hours): what this catches is what the structure of real inputs
//! plus blind mutation reaches, every CI run, with no second build.
//!
//! A panic fails the test naming the input (hex, and a file under the
//! test's temporary directory); an allocation over 256 MiB aborts naming
//! it; an input running over 10 s is reported as a hang.
//! `BACKUP_FUZZ_SEED` repeats a run's choices.

#![allow(clippy::unwrap_used)]

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backup_fuzz::{target, Target, TARGETS};

backup_fuzz::limit_allocations!();

/// An input running this long is a hang.
const HANG: Duration = Duration::from_secs(10);

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name)
}

/// The checked-in seeds of a target, in name order.
fn seeds(name: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// xorshift64*: small, fast and repeatable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values that length and count fields go wrong with.
const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// One to four mutations of `input`, some taking pieces of the other
/// seeds; at most `max_len` bytes.
fn mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(10) {
            // Flip one bit.
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            // A random byte.
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            // A small step up or down (counters, lengths, type bytes).
            2 if len > 0 => {
                let i = rng.below(len);
                let d = rng.below(33) as u8;
                v[i] = if rng.below(2) == 0 {
                    v[i].wrapping_add(d)
                } else {
                    v[i].wrapping_sub(d)
                };
            }
            // An interesting integer of 1, 2, 4 or 8 bytes, either order.
            3 if len > 0 => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.below(4)].min(len);
                let bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let at = rng.below(len - width + 1);
                let from = if rng.below(2) == 0 { 0 } else { 8 - width };
                v[at..at + width].copy_from_slice(&bytes[from..from + width]);
            }
            // Remove a range.
            4 if len > 1 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                v.drain(at..at + n);
            }
            // Repeat a range in place.
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let copy = v[at..at + n].to_vec();
                let times = 1 + rng.below(8);
                for _ in 0..times {
                    v.splice(at..at, copy.iter().copied());
                }
            }
            // Cut the end off.
            6 if len > 0 => v.truncate(rng.below(len)),
            // Splice: keep a head, append another seed's tail.
            7 => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let keep = if len == 0 { 0 } else { rng.below(len) };
                    v.truncate(keep);
                    v.extend_from_slice(&other[rng.below(other.len())..]);
                }
            }
            // Copy a range of another seed over a range of this one.
            8 if len > 0 => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = (1 + rng.below(64)).min(other.len() - from);
                    let at = rng.below(len);
                    let n = n.min(len - at);
                    v[at..at + n].copy_from_slice(&other[from..from + n]);
                }
            }
            // Random bytes inserted.
            _ => {
                let at = if len == 0 { 0 } else { rng.below(len + 1) };
                let n = 1 + rng.below(16);
                let fresh: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, fresh);
            }
        }
    }
    v.truncate(max_len);
    v
}

/// Writes a failing input where the report can name it.
fn keep(name: &str, what: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let hash: u64 = input.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let path = dir.join(format!("{what}-{hash:016x}"));
    std::fs::write(&path, input).unwrap();
    path
}

fn hex(input: &[u8]) -> String {
    let shown = input.iter().take(512).fold(String::new(), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    });
    if input.len() > 512 {
        format!("{shown}... ({} bytes)", input.len())
    } else {
        shown
    }
}

/// What one run of a target did.
struct Outcome {
    executions: u64,
    failure: Option<String>,
}

/// Runs `t` on its seeds, then on mutations until `budget` has passed.
fn run_for(t: Target, budget: Duration, seed: u64) -> Outcome {
    let pool = seeds(t.name);
    assert!(!pool.is_empty(), "{}: no seeds in fuzz/corpus", t.name);
    let executions = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let current = Arc::new(Mutex::new(Vec::new()));
    let worker = {
        let (executions, done, current) = (executions.clone(), done.clone(), current.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            let start = Instant::now();
            let mut i = 0usize;
            let result = loop {
                let input = if i < pool.len() {
                    pool[i].clone()
                } else if start.elapsed() >= budget {
                    break None;
                } else {
                    let base = &pool[rng.below(pool.len())];
                    mutate(&mut rng, base, &pool, t.max_len)
                };
                i += 1;
                current.lock().unwrap().clone_from(&input);
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    backup_fuzz::run(&t, &input);
                }));
                executions.fetch_add(1, Ordering::Relaxed);
                if let Err(panic) = outcome {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    break Some((msg, input));
                }
            };
            done.store(true, Ordering::Release);
            result
        })
    };
    // The watchdog: the count of executions must move within HANG.
    let (mut last, mut since) = (0, Instant::now());
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        let now = executions.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > HANG {
            let input = current.lock().unwrap().clone();
            let path = keep(t.name, "hang", &input);
            return Outcome {
                executions: now,
                failure: Some(format!(
                    "{}: an input ran over {HANG:?} (kept in {}): {}",
                    t.name,
                    path.display(),
                    hex(&input)
                )),
            };
        }
    }
    let failure = worker.join().unwrap().map(|(msg, input)| {
        let path = keep(t.name, "crash", &input);
        format!(
            "{}: panicked: {msg} (input kept in {}): {}",
            t.name,
            path.display(),
            hex(&input)
        )
    });
    Outcome {
        executions: executions.load(Ordering::Relaxed),
        failure,
    }
}

fn fuzz(name: &str) {
    let t = target(name).unwrap();
    let seconds: f64 = std::env::var("BACKUP_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let seed = std::env::var("BACKUP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let outcome = run_for(t, Duration::from_secs_f64(seconds), seed);
    eprintln!(
        "{name}: {} executions in {seconds} s (BACKUP_FUZZ_SEED={seed})",
        outcome.executions
    );
    if let Some(failure) = outcome.failure {
        panic!("{failure}\nrepeat the run's choices with BACKUP_FUZZ_SEED={seed}");
    }
}

macro_rules! fuzz_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                fuzz(stringify!($name));
            }
        )*

        /// Every target has a test here, a libFuzzer binary in `fuzz/`
        /// and seeds; and the other way round.
        #[test]
        fn every_target_is_run_here_and_in_fuzz() {
            let here: Vec<&str> = vec![$(stringify!($name)),*];
            let listed: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            assert_eq!(here, listed, "a test per target, in the order of TARGETS");
            let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
            let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
            let bins: Vec<&str> = manifest
                .lines()
                .filter_map(|l| l.strip_prefix("name = \""))
                .filter_map(|l| l.strip_suffix('"'))
                .filter(|n| *n != "backup-fuzz-targets")
                .collect();
            assert_eq!(bins, listed, "fuzz/Cargo.toml's [[bin]]s are the targets");
            for name in listed {
                let main = std::fs::read_to_string(fuzz.join("fuzz_targets").join(format!("{name}.rs")))
                    .unwrap();
                assert!(main.contains(&format!("fuzz_main!(\"{name}\")")), "{name}.rs: {main}");
                assert!(!seeds(name).is_empty(), "{name}: no seeds");
            }
        }
    };
}

fuzz_tests!(
    redis_rdb,
    redis_dump,
    redis_lzf,
    redis_resp,
    mongo_oplog,
    pg_tar,
    pg_manifest,
    pg_wal,
    pg_script,
    pack,
    repo_file,
    config,
);

/// The mutator itself: repeatable from its seed, within the length
/// limit, and changing its input.
#[test]
fn mutations_are_repeatable_and_bounded() {
    let pool = vec![b"REDIS0011 some seed bytes".to_vec(), vec![0u8; 40]];
    let run = |seed| {
        let mut rng = Rng(seed);
        (0..200)
            .map(|i| mutate(&mut rng, &pool[i % 2], &pool, 32))
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(9));
    assert!(a.iter().all(|m| m.len() <= 32));
    assert!(
        a.iter()
            .filter(|m| **m != pool[0] && **m != pool[1])
            .count()
            > 150
    );
}

/// The harness finds what it is for: a target that panics on one byte
/// pattern is reported with the input.
#[test]
fn a_panicking_target_is_reported_with_its_input() {
    fn picky(data: &[u8]) {
        assert!(
            !data.windows(2).any(|w| w == [0xff, 0x00]),
            "found the pattern"
        );
    }
    let t = Target {
        name: "config",
        run: picky,
        max_len: 64,
    };
    let outcome = run_for(t, Duration::from_secs(20), 1);
    let failure = outcome.failure.expect("the pattern is found within 20 s");
    assert!(failure.contains("found the pattern"), "{failure}");
    assert!(failure.contains("ff00"), "{failure}");
}
