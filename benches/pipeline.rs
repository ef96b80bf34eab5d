//! Throughput of the per-chunk pipeline work on one core, against raw zstd
//! at the same (repository default) level on the same data.
//!
//! Run with `cargo bench -p backup-benches --bench pipeline`. Criterion
//! reports each stage's time and throughput; at the end the bench measures
//! the pipeline and raw zstd again, interleaved in this same run, and prints
//! `ratio pipeline/zstd = X` (absolute numbers are on the details line).
//!
//! Environment: `PIPELINE_CORPUS_MIB` (default 64), `PIPELINE_RATIO_ROUNDS`
//! (default 5).

use std::hint::black_box;
use std::time::Duration;

use backup_benches::{
    corpus, corpus_bytes_from_env, measure_ratio, Pipeline, RawZstd, CORPUS_SEED,
};
use criterion::{Criterion, SamplingMode, Throughput};

#[allow(clippy::expect_used)] // a benchmark has no caller to return errors to
fn bench_stages(c: &mut Criterion, data: &[u8]) {
    let mut pipeline = Pipeline::new().expect("zstd compressor");
    let mut zstd = RawZstd::new().expect("zstd compressor");
    let chunks = pipeline.chunk(data).expect("chunking in-memory data");

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    g.bench_function("raw zstd (1 MiB blocks)", |b| {
        b.iter(|| zstd.run(black_box(data)).expect("zstd"));
    });
    g.bench_function("full: chunk + hash + compress + seal", |b| {
        b.iter(|| pipeline.run(black_box(data)).expect("pipeline"));
    });
    g.bench_function("chunk (FastCDC, default params)", |b| {
        b.iter(|| pipeline.chunk_only(black_box(data)).expect("chunking"));
    });
    g.bench_function("hash (keyed HMAC-SHA-256)", |b| {
        b.iter(|| pipeline.hash_only(black_box(&chunks)));
    });
    g.bench_function("compress + seal (encode_blob)", |b| {
        b.iter(|| pipeline.encode_only(black_box(&chunks)));
    });
    g.bench_function("compress only (zstd on the chunks)", |b| {
        b.iter(|| pipeline.compress_only(black_box(&chunks)).expect("zstd"));
    });
    g.bench_function("seal only (AES-256-GCM)", |b| {
        b.iter(|| pipeline.seal_only(black_box(&chunks)));
    });
    g.finish();
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // criterion runs each benchmark once as a smoke test, and so do we.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let listing = std::env::args().any(|a| a == "--list");
    let size = if bench_mode {
        corpus_bytes_from_env()
    } else {
        4 * 1024 * 1024
    };
    let data = corpus(size, CORPUS_SEED);

    let mut c = Criterion::default().configure_from_args();
    bench_stages(&mut c, &data);
    c.final_summary();
    if listing {
        return;
    }

    let rounds = if bench_mode {
        std::env::var("PIPELINE_RATIO_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5)
    } else {
        1
    };
    match measure_ratio(&data, rounds) {
        Ok(report) => println!("\n{report}"),
        Err(e) => {
            eprintln!("error: ratio measurement failed: {e}");
            std::process::exit(1);
        }
    }
}
