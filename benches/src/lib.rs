//! Shared code of the backup benchmarks: a reproducible mixed corpus, the
//! per-chunk pipeline work of `backup-core` run on one core, the raw zstd
//! baseline, and the in-run ratio measurement printed by both the criterion
//! bench (`benches/pipeline.rs`) and the `pipeline_ratio` binary.
//!
//! Only public APIs of `backup-core` are used: [`Chunker`],
//! [`ChunkerParams::default`], [`MasterKey`], [`BlobHasher`] and
//! [`encode_blob`] (zstd at the repository's default level, then
//! AES-256-GCM).

use std::fmt;
use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use backup_core::chunker::Chunker;
use backup_core::config::{ChunkerParams, CompressionParams};
use backup_core::crypto::{BlobHasher, MasterKey};
use backup_core::pack::encode_blob;

/// Default corpus size: 64 MiB.
pub const DEFAULT_CORPUS_BYTES: usize = 64 * 1024 * 1024;
/// Seed of the default corpus.
pub const CORPUS_SEED: u64 = 0x0bac_4b5e_2024;
/// Fixed chunker gear seed, so chunk boundaries are the same in every run
/// (a repository's real seed is random; the speed does not depend on it).
pub const CHUNKER_SEED: u64 = 0x5eed_cdc0;
/// Block size of the raw zstd baseline: the average chunk size of
/// [`ChunkerParams::default`], so both sides compress similar frames.
pub const ZSTD_BLOCK: usize = 1024 * 1024;

/// Corpus size from `PIPELINE_CORPUS_MIB`, else [`DEFAULT_CORPUS_BYTES`].
pub fn corpus_bytes_from_env() -> usize {
    std::env::var("PIPELINE_CORPUS_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&m| m > 0)
        .map_or(DEFAULT_CORPUS_BYTES, |m| m * 1024 * 1024)
}

/// `SplitMix64`: tiny, fast and identical on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

const SYLLABLES: &[&str] = &[
    "get", "set", "buf", "len", "idx", "node", "tree", "pack", "blob", "read", "write", "open",
    "close", "key", "val", "map", "list", "item", "count", "size", "data", "file", "path", "name",
    "hash", "id", "ctx", "cfg", "err", "msg", "src", "dst", "tmp", "max", "min", "off", "pos",
    "chunk", "cache", "lock", "entry", "table", "row", "page", "query", "conn", "pool",
];
const KEYWORDS: &[&str] = &[
    "fn", "let", "mut", "pub", "impl", "match", "if", "else", "return", "struct", "enum", "use",
    "for", "in", "while", "Some", "None", "Ok", "Err", "self", "def", "class", "import", "int",
    "void", "const", "static", "=", "==", "(", ")", "{", "}", ";", ",", "->", "&",
];

fn identifier(rng: &mut Rng) -> String {
    let parts = rng.range(1, 3);
    let mut s = String::new();
    for i in 0..parts {
        if i > 0 {
            s.push('_');
        }
        s.push_str(SYLLABLES[rng.below(SYLLABLES.len())]);
    }
    s
}

/// Appends about `n` bytes of source-code-like text (compressible 3-5x).
fn text_like(rng: &mut Rng, vocabulary: &[String], n: usize, out: &mut Vec<u8>) {
    let end = out.len() + n;
    while out.len() < end {
        let depth = rng.below(5);
        out.extend(std::iter::repeat_n(b' ', depth * 4));
        if rng.below(12) == 0 {
            out.extend_from_slice(b"// ");
        }
        for i in 0..rng.range(1, 9) {
            if i > 0 {
                out.push(b' ');
            }
            match rng.below(10) {
                0..=3 => out.extend_from_slice(KEYWORDS[rng.below(KEYWORDS.len())].as_bytes()),
                4..=8 => out.extend_from_slice(vocabulary[rng.below(vocabulary.len())].as_bytes()),
                _ => out.extend_from_slice(rng.below(4096).to_string().as_bytes()),
            }
        }
        out.push(b'\n');
    }
    out.truncate(end);
}

/// Appends `n` bytes of structured binary (object-file-like and table-like
/// segments; compressible about 1.5-3x).
fn binary_like(
    rng: &mut Rng,
    tables: &[[u8; 256]],
    vocabulary: &[String],
    n: usize,
    out: &mut Vec<u8>,
) {
    let end = out.len() + n;
    while out.len() < end {
        let len = [512, 4096, 16384, 65536, 262_144][rng.below(5)].min(end - out.len());
        let start = out.len();
        match rng.below(100) {
            // Code-like: skewed byte distribution.
            0..=44 => {
                out.resize(start + len, 0);
                rng.fill(&mut out[start..]);
                let table = &tables[rng.below(tables.len())];
                for b in &mut out[start..] {
                    *b = table[*b as usize];
                }
            }
            // Records with counters and a noisy byte.
            45..=64 => {
                let mut v = rng.next_u64() >> 24;
                let step = [1, 1, 8, 16, 4096][rng.below(5)];
                while out.len() < start + len {
                    let mut rec = v.to_le_bytes();
                    rec[3] = rng.next_u64() as u8;
                    out.extend_from_slice(&rec);
                    v += step;
                }
                out.truncate(start + len);
            }
            // String table.
            65..=84 => {
                while out.len() < start + len {
                    out.extend_from_slice(vocabulary[rng.below(vocabulary.len())].as_bytes());
                    out.push(0);
                }
                out.truncate(start + len);
            }
            // Padding.
            85..=92 => out.resize(start + len, 0),
            // Embedded compressed data.
            _ => {
                out.resize(start + len, 0);
                rng.fill(&mut out[start..]);
            }
        }
    }
}

fn skew_table(rng: &mut Rng) -> [u8; 256] {
    const FREQUENT: [u8; 12] = [
        0x00, 0xff, 0x48, 0x89, 0x8b, 0xe8, 0x0f, 0x85, 0x84, 0x24, 0x44, 0xc3,
    ];
    let mut t = [0u8; 256];
    for b in &mut t {
        *b = match rng.below(100) {
            0..=29 => 0,
            30..=54 => FREQUENT[rng.below(FREQUENT.len())],
            _ => rng.next_u64() as u8,
        };
    }
    t
}

/// A reproducible corpus of `total` bytes: one third each of text-like,
/// structured binary and random data, in segments of 256 KiB to 6 MiB in a
/// seeded order, so every kind is spread across the stream.
pub fn corpus(total: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let vocabulary: Vec<String> = (0..3000).map(|_| identifier(&mut rng)).collect();
    let tables: Vec<[u8; 256]> = (0..8).map(|_| skew_table(&mut rng)).collect();
    let mut budget = [total / 3, total / 3, total - 2 * (total / 3)];
    let mut out = Vec::with_capacity(total);
    while budget.iter().any(|&b| b > 0) {
        let mut kind = rng.below(3);
        while budget[kind] == 0 {
            kind = (kind + 1) % 3;
        }
        let len = rng.range(256 * 1024, 6 * 1024 * 1024).min(budget[kind]);
        budget[kind] -= len;
        match kind {
            0 => text_like(&mut rng, &vocabulary, len, &mut out),
            1 => binary_like(&mut rng, &tables, &vocabulary, len, &mut out),
            _ => {
                let start = out.len();
                out.resize(start + len, 0);
                rng.fill(&mut out[start..]);
            }
        }
    }
    out
}

/// What one run of the pipeline produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineOutput {
    /// Chunks cut.
    pub chunks: usize,
    /// Chunks stored compressed.
    pub compressed: usize,
    /// Bytes stored (compressed and sealed).
    pub stored: usize,
}

/// The per-chunk work of a backup, on the calling thread only: chunk with
/// `FastCDC`, hash with the keyed blob hasher, then compress and seal with
/// [`encode_blob`] — what one encoder thread of the saver does, plus the
/// reader's chunking and hashing.
pub struct Pipeline {
    key: MasterKey,
    hasher: BlobHasher,
    params: ChunkerParams,
    compressor: zstd::bulk::Compressor<'static>,
}

impl Pipeline {
    /// A pipeline with a fresh encrypting key, default chunker parameters and
    /// the default repository compression level.
    ///
    /// # Errors
    ///
    /// When zstd cannot create a compressor.
    pub fn new() -> io::Result<Self> {
        let key = MasterKey::generate(true);
        Ok(Pipeline {
            hasher: BlobHasher::new(&key, backup_core::crypto::IdHash::default()),
            key,
            params: ChunkerParams::default(),
            compressor: zstd::bulk::Compressor::new(CompressionParams::default().level)?,
        })
    }

    /// The whole per-chunk pipeline over `data`.
    ///
    /// # Errors
    ///
    /// Never for in-memory data; kept for the chunker's reader interface.
    pub fn run(&mut self, data: &[u8]) -> io::Result<PipelineOutput> {
        let mut chunker = Chunker::new(data, self.params, CHUNKER_SEED);
        let mut out = PipelineOutput::default();
        while let Some(chunk) = chunker.next_chunk()? {
            black_box(self.hasher.hash(&chunk));
            let (compressed, stored) = encode_blob(&self.key, &mut self.compressor, &chunk);
            out.chunks += 1;
            out.compressed += usize::from(compressed);
            out.stored += stored.len();
        }
        Ok(out)
    }

    /// Chunking alone; returns the chunks.
    ///
    /// # Errors
    ///
    /// Never for in-memory data.
    pub fn chunk(&self, data: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let mut chunker = Chunker::new(data, self.params, CHUNKER_SEED);
        let mut chunks = Vec::new();
        while let Some(chunk) = chunker.next_chunk()? {
            chunks.push(chunk);
        }
        Ok(chunks)
    }

    /// Chunking alone, dropping each chunk at once; returns the count.
    ///
    /// # Errors
    ///
    /// Never for in-memory data.
    pub fn chunk_only(&self, data: &[u8]) -> io::Result<usize> {
        let mut chunker = Chunker::new(data, self.params, CHUNKER_SEED);
        let mut n = 0;
        while let Some(chunk) = chunker.next_chunk()? {
            black_box(&chunk);
            n += 1;
        }
        Ok(n)
    }

    /// Keyed hashing (`MasterKey::blob_id` through a reusable
    /// [`BlobHasher`]) of every chunk.
    pub fn hash_only(&self, chunks: &[Vec<u8>]) -> usize {
        for c in chunks {
            black_box(self.hasher.hash(c));
        }
        chunks.len()
    }

    /// [`encode_blob`] (zstd then AES-256-GCM) of every chunk; returns the
    /// stored bytes.
    pub fn encode_only(&mut self, chunks: &[Vec<u8>]) -> usize {
        chunks
            .iter()
            .map(|c| encode_blob(&self.key, &mut self.compressor, c).1.len())
            .sum()
    }

    /// zstd alone (same compressor and level as [`encode_blob`]) of every
    /// chunk; returns the compressed bytes.
    ///
    /// # Errors
    ///
    /// zstd errors (not expected).
    pub fn compress_only(&mut self, chunks: &[Vec<u8>]) -> io::Result<usize> {
        let mut total = 0;
        for c in chunks {
            total += self.compressor.compress(c)?.len();
        }
        Ok(total)
    }

    /// AES-256-GCM sealing alone (no compression) of every chunk.
    pub fn seal_only(&self, chunks: &[Vec<u8>]) -> usize {
        chunks.iter().map(|c| self.key.seal(c).len()).sum()
    }
}

/// Raw zstd at the repository's level over fixed [`ZSTD_BLOCK`] blocks, one
/// thread: the baseline the pipeline is compared with.
pub struct RawZstd {
    compressor: zstd::bulk::Compressor<'static>,
}

impl RawZstd {
    /// A compressor at [`CompressionParams::default`]'s level.
    ///
    /// # Errors
    ///
    /// When zstd cannot create a compressor.
    pub fn new() -> io::Result<Self> {
        Ok(RawZstd {
            compressor: zstd::bulk::Compressor::new(CompressionParams::default().level)?,
        })
    }

    /// Compresses `data` block by block; returns the compressed size.
    ///
    /// # Errors
    ///
    /// zstd errors (not expected).
    pub fn run(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut total = 0;
        for block in data.chunks(ZSTD_BLOCK) {
            total += self.compressor.compress(block)?.len();
        }
        Ok(total)
    }
}

/// Median times of one in-run comparison.
#[derive(Debug, Clone)]
pub struct RatioReport {
    /// Corpus size in bytes.
    pub corpus_bytes: usize,
    /// Rounds measured (each stage once per round, interleaved).
    pub rounds: usize,
    /// Raw zstd baseline.
    pub zstd: Duration,
    /// The whole per-chunk pipeline.
    pub pipeline: Duration,
    /// Chunking alone.
    pub chunk: Duration,
    /// Keyed hashing alone.
    pub hash: Duration,
    /// Compression and sealing alone.
    pub encode: Duration,
    /// zstd alone on the pipeline's chunks.
    pub compress: Duration,
    /// Sealing alone, uncompressed.
    pub seal: Duration,
    /// Pipeline output.
    pub output: PipelineOutput,
    /// Raw zstd output size.
    pub zstd_bytes: usize,
}

impl RatioReport {
    /// Pipeline time divided by raw zstd time.
    pub fn ratio(&self) -> f64 {
        self.pipeline.as_secs_f64() / self.zstd.as_secs_f64()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let r = f();
    (t.elapsed(), r)
}

/// Measures the pipeline and raw zstd on `data` in the same run, `rounds`
/// times each, interleaved so that machine noise hits both alike, and
/// reports medians.
///
/// # Errors
///
/// zstd errors (not expected).
pub fn measure_ratio(data: &[u8], rounds: usize) -> io::Result<RatioReport> {
    let rounds = rounds.max(1);
    let mut pipeline = Pipeline::new()?;
    let mut zstd = RawZstd::new()?;
    let chunks = pipeline.chunk(data)?;
    // Warm up caches and allocators once.
    zstd.run(data)?;
    pipeline.run(data)?;
    let mut times = [(); 7].map(|()| Vec::with_capacity(rounds));
    let mut output = PipelineOutput::default();
    let mut zstd_bytes = 0;
    for _ in 0..rounds {
        let (took, result) = timed(|| zstd.run(data));
        zstd_bytes = result?;
        times[0].push(took);
        let (took, result) = timed(|| pipeline.run(data));
        output = result?;
        times[1].push(took);
        let (took, result) = timed(|| pipeline.chunk_only(data));
        result?;
        times[2].push(took);
        times[3].push(timed(|| pipeline.hash_only(&chunks)).0);
        times[4].push(timed(|| pipeline.encode_only(&chunks)).0);
        times[5].push(timed(|| pipeline.seal_only(&chunks)).0);
        let (took, result) = timed(|| pipeline.compress_only(&chunks));
        result?;
        times[6].push(took);
    }
    let [zstd_t, pipeline_t, chunk, hash, encode, seal, compress] = times.map(median);
    Ok(RatioReport {
        corpus_bytes: data.len(),
        rounds,
        zstd: zstd_t,
        pipeline: pipeline_t,
        chunk,
        hash,
        encode,
        compress,
        seal,
        output,
        zstd_bytes,
    })
}

impl fmt::Display for RatioReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let z = self.zstd.as_secs_f64();
        let mib = self.corpus_bytes as f64 / (1024.0 * 1024.0);
        let rate = |d: Duration| mib / d.as_secs_f64();
        writeln!(f, "ratio pipeline/zstd = {:.2}", self.ratio())?;
        writeln!(
            f,
            "  stages / zstd: chunk {:.2}, hash {:.2}, compress+seal {:.2} \
             (compress alone {:.2}, seal alone {:.2})",
            self.chunk.as_secs_f64() / z,
            self.hash.as_secs_f64() / z,
            self.encode.as_secs_f64() / z,
            self.compress.as_secs_f64() / z,
            self.seal.as_secs_f64() / z,
        )?;
        writeln!(
            f,
            "  size: pipeline stores {:.3} of the input ({} chunks, {} compressed), raw zstd {:.3}",
            self.output.stored as f64 / self.corpus_bytes as f64,
            self.output.chunks,
            self.output.compressed,
            self.zstd_bytes as f64 / self.corpus_bytes as f64,
        )?;
        write!(
            f,
            "  details ({mib:.0} MiB corpus, median of {} interleaved rounds, one core): \
             zstd {:.0} MiB/s, pipeline {:.0} MiB/s, chunk {:.0}, hash {:.0}, \
             compress+seal {:.0}, compress {:.0}, seal {:.0} MiB/s",
            self.rounds,
            rate(self.zstd),
            rate(self.pipeline),
            rate(self.chunk),
            rate(self.hash),
            rate(self.encode),
            rate(self.compress),
            rate(self.seal),
        )
    }
}

/// The peak RSS in KiB that GNU time printed (`-f MAXRSS_KIB=%M`) in
/// `stderr`, 0 when absent.
pub fn max_rss_kib(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS_KIB="))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// Runs `backup ARGS` on `repo` (password `bench`) under `/usr/bin/time`;
/// returns its wall time, peak RSS in KiB and standard output.
///
/// # Panics
///
/// When GNU time cannot run or the command fails (its stderr is shown).
#[allow(clippy::expect_used)] // A benchmark stops at the first failure.
pub fn run_backup(
    bin: &str,
    repo: &std::path::Path,
    args: &[&str],
) -> (std::time::Duration, u64, String) {
    let t = std::time::Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS_KIB=%M", bin])
        .args(args)
        .env("BACKUP_REPOSITORY", repo)
        .env("BACKUP_PASSWORD", "bench")
        .output()
        .expect("running /usr/bin/time backup (apt-get install time)");
    let elapsed = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backup {args:?} failed: {stderr}");
    (
        elapsed,
        max_rss_kib(&stderr),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_reproducible_and_sized() {
        let a = corpus(3 * 1024 * 1024 + 7, 1);
        assert_eq!(a.len(), 3 * 1024 * 1024 + 7);
        assert_eq!(a, corpus(3 * 1024 * 1024 + 7, 1));
        assert_ne!(a, corpus(3 * 1024 * 1024 + 7, 2));
    }

    #[test]
    fn pipeline_covers_input() {
        let data = corpus(4 * 1024 * 1024, 3);
        let mut p = Pipeline::new().unwrap();
        let chunks = p.chunk(&data).unwrap();
        assert_eq!(chunks.concat(), data);
        let out = p.run(&data).unwrap();
        assert_eq!(out.chunks, chunks.len());
        assert!(out.stored < data.len());
    }
}
