//! The fuzz entry points of the parsers that read bytes this program did
//! not write (docs/FUZZING.md), one function per target, and what both
//! harnesses around them share:
//!
//! - the coverage-guided libFuzzer targets in `fuzz/` (their own
//!   workspace, built with instrumentation by `scripts/fuzz.sh`, for
//!   runs of hours);
//! - the mutation run of the test suite (`tests/mutate.rs`): every
//!   target over its seeds and mutations of them for a bounded time,
//!   without instrumentation, so that CI needs no second build.
//!
//! A target returns nothing: a run fails only on a panic, an abort, an
//! allocation over [`MAX_ALLOCATION`] or a hang. Not a stable interface.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;

use backup_core::crypto::{BlobHasher, IdHash, MasterKey};
use backup_core::pack::{self, IdCheck};
use backup_core::Id;
use backup_sources::{mongo, postgres, redis};

/// A fuzz target: its name (the binary in `fuzz/`, the seed directory
/// `fuzz/corpus/NAME`) and its entry point.
#[derive(Clone, Copy)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
    /// The largest input worth trying (zstd expands pack data up to
    /// 32768-fold: pack inputs stay small so that what they truly hold
    /// stays under the allocation limit).
    pub max_len: usize,
}

const MAX_LEN: usize = 64 * 1024;

/// Every target, in the order the runs report them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "redis_rdb",
        run: redis::fuzz::rdb_stream,
        max_len: MAX_LEN,
    },
    Target {
        name: "redis_dump",
        run: redis::fuzz::dump_payload,
        max_len: MAX_LEN,
    },
    Target {
        name: "redis_lzf",
        run: redis::fuzz::lzf,
        max_len: MAX_LEN,
    },
    Target {
        name: "redis_resp",
        run: redis::fuzz::replication,
        max_len: MAX_LEN,
    },
    Target {
        name: "mongo_oplog",
        run: mongo::fuzz::oplog_piece,
        max_len: MAX_LEN,
    },
    Target {
        name: "pg_tar",
        run: postgres::fuzz::tar_stream,
        max_len: MAX_LEN,
    },
    Target {
        name: "pg_manifest",
        run: postgres::fuzz::backup_manifest,
        max_len: MAX_LEN,
    },
    Target {
        name: "pg_wal",
        run: postgres::fuzz::wal_text,
        max_len: MAX_LEN,
    },
    Target {
        name: "pg_script",
        run: postgres::fuzz::dump_script,
        max_len: MAX_LEN,
    },
    Target {
        name: "pack",
        run: pack_file,
        max_len: 4096,
    },
    Target {
        name: "repo_file",
        run: repository_file,
        max_len: MAX_LEN,
    },
    Target {
        name: "config",
        run: config_file,
        max_len: MAX_LEN,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}

/// The largest single allocation a target may make (256 MiB).
pub const MAX_ALLOCATION: usize = 256 << 20;

thread_local! {
    /// The input this thread is running, named when it allocates too much.
    static CURRENT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// Runs `target` on `input`, with `input` named in the report of an
/// allocation over the limit (the mutation run has no other way to
/// keep the input of an abort).
pub fn run(target: &Target, input: &[u8]) {
    CURRENT.with(|c| c.set((input.as_ptr(), input.len())));
    (target.run)(input);
    CURRENT.with(|c| c.set((std::ptr::null(), 0)));
}

/// The system allocator, refusing allocations over [`MAX_ALLOCATION`].
pub struct LimitedAlloc;

fn too_large() -> ! {
    // No allocation from here on: this runs inside the allocator.
    let mut err = std::io::stderr();
    let _ = std::io::Write::write_all(
        &mut err,
        b"\n==fuzz== allocation over MAX_ALLOCATION (256 MiB): a length from the input was not checked\n",
    );
    let (ptr, len) = CURRENT.with(Cell::get);
    if !ptr.is_null() {
        let _ = std::io::Write::write_all(&mut err, b"==fuzz== input (hex): ");
        #[allow(unsafe_code)]
        // SAFETY: `run` set the pointer and length of the input it is
        // running, which lives until `run` returns and resets them.
        let input = unsafe { std::slice::from_raw_parts(ptr, len) };
        let digits = b"0123456789abcdef";
        for chunk in input.chunks(256) {
            let mut line = [0u8; 512];
            for (i, b) in chunk.iter().enumerate() {
                line[2 * i] = digits[usize::from(b >> 4)];
                line[2 * i + 1] = digits[usize::from(b & 15)];
            }
            let _ = std::io::Write::write_all(&mut err, &line[..2 * chunk.len()]);
        }
        let _ = std::io::Write::write_all(&mut err, b"\n");
    }
    std::process::abort();
}

// SAFETY: forwards to `System` unchanged, only refusing large layouts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            too_large();
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            too_large();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            too_large();
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// The whole of a libFuzzer target binary in `fuzz/` (after its
/// `#![no_main]`): the allocation limit, and the target called `$name`
/// run on every input.
#[macro_export]
macro_rules! fuzz_main {
    ($name:literal) => {
        $crate::limit_allocations!();
        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            static TARGET: std::sync::OnceLock<$crate::Target> = std::sync::OnceLock::new();
            let target = TARGET.get_or_init(|| {
                $crate::target($name).expect("the name of a target in backup_fuzz::TARGETS")
            });
            $crate::run(target, data);
        });
    };
}

/// Installs [`LimitedAlloc`] as the global allocator of a binary.
#[macro_export]
macro_rules! limit_allocations {
    () => {
        #[global_allocator]
        static ALLOC: $crate::LimitedAlloc = $crate::LimitedAlloc;
    };
}

fn key() -> &'static (MasterKey, BlobHasher) {
    static KEY: OnceLock<(MasterKey, BlobHasher)> = OnceLock::new();
    KEY.get_or_init(|| {
        // Unencrypted: sealing is the identity, so the fuzzer reaches the
        // parsers behind authentication (in an encrypted repository a
        // damaged file fails authentication first).
        let key = MasterKey::generate(false);
        let hasher = BlobHasher::new(&key, IdHash::Blake3);
        (key, hasher)
    })
}

/// A whole pack file as a reader sees it: the header length at its end,
/// the header, then each blob the header lists (opened, decompressed,
/// length and id checked).
pub fn pack_file(data: &[u8]) {
    let (key, hasher) = key();
    let id = Id([7; 32]);
    let Ok(hlen) = pack::header_length(&id, data.len() as u64, data) else {
        return;
    };
    let Some(sealed) = data
        .len()
        .checked_sub(4 + hlen as usize)
        .map(|s| &data[s..data.len() - 4])
    else {
        return;
    };
    let Ok(entries) = pack::decode_header(key, &id, sealed) else {
        return;
    };
    for e in entries.iter().take(64) {
        let start = e.offset as usize;
        let Some(stored) = data.get(start..start.saturating_add(e.length as usize)) else {
            continue;
        };
        let _ = pack::decode_blob_with(key, hasher, e, &id, stored, IdCheck::Always);
    }
}

/// A repository metadata file after its seal is opened: decompressed
/// (within its limit), and the same bytes as the JSON of each kind of
/// file (index, snapshot, tree, repository config, key file) and as a
/// content list.
pub fn repository_file(data: &[u8]) {
    let id = Id([7; 32]);
    let _ = backup_core::repo::inflate_metadata(data);
    let _ = serde_json::from_slice::<backup_core::index::IndexFile>(data);
    let _ = serde_json::from_slice::<backup_core::snapshot::Snapshot>(data);
    let _ = backup_core::tree::Tree::decode(data, &id);
    let _ = backup_core::config::RepoConfig::parse(data);
    let _ = backup_core::keys::KeyFile::decode(data, "fuzz");
    let _ = backup_core::tree::decode_content_list(data, &id);
}

/// The configuration file (TOML), parsed and validated.
pub fn config_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = backup_ops::config::Config::parse(text, "fuzz.toml") {
            let _ = c.all_jobs();
            let _ = c.check_secrets();
        }
    }
}
