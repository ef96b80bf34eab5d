//! Prints `ratio pipeline/zstd = X`: the per-chunk pipeline (chunk, keyed
//! hash, zstd, AES-256-GCM) against raw zstd at the same level on the same corpus,
//! both on one core, measured interleaved in this run. No criterion, so it
//! is quick: `cargo run --release -p backup-benches --bin pipeline_ratio`.
//!
//! Arguments: `[CORPUS_MIB] [ROUNDS]` (defaults: `PIPELINE_CORPUS_MIB` or 64,
//! and 5).

use backup_benches::{corpus, corpus_bytes_from_env, measure_ratio, CORPUS_SEED};

fn main() {
    let mut args = std::env::args().skip(1);
    let size = match args.next().map(|a| a.parse::<usize>()) {
        Some(Ok(mib)) if mib > 0 => mib * 1024 * 1024,
        Some(_) => usage(),
        None => corpus_bytes_from_env(),
    };
    let rounds = match args.next().map(|a| a.parse::<usize>()) {
        Some(Ok(r)) if r > 0 => r,
        Some(_) => usage(),
        None => 5,
    };
    let data = corpus(size, CORPUS_SEED);
    match measure_ratio(&data, rounds) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("error: ratio measurement failed: {e}");
            std::process::exit(1);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: pipeline_ratio [CORPUS_MIB] [ROUNDS]");
    std::process::exit(2);
}
