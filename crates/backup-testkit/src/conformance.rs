//! A conformance suite for the [`Sink`] contract, run against every
//! backend.
//!
//! Each check is a public function, so a backend's tests can run them one
//! by one; [`run_conformance`] runs them all on a fresh (empty) sink. A
//! failed check panics with a message naming the sink, the check and what
//! was expected. Every check cleans up the files it wrote, so only
//! [`check_empty`] needs an empty sink.

use std::sync::Arc;

use backup_core::{Error, FileKind, Id, PutMode, Sink};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

/// Settings of the suite.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Conformance {
    /// Size of the large object; make it larger than the backend's
    /// multipart threshold to exercise multipart uploads.
    pub large_object_size: usize,
    /// How many objects the "many objects" check writes and lists.
    pub many_objects: usize,
    /// How many writers race in the concurrent-create check.
    pub racers: usize,
}

impl Default for Conformance {
    fn default() -> Self {
        Conformance {
            large_object_size: 12 * 1024 * 1024 + 12_345,
            many_objects: 150,
            racers: 8,
        }
    }
}

impl Conformance {
    /// Sets the size of the large object.
    #[must_use]
    pub fn large_object_size(mut self, bytes: usize) -> Self {
        self.large_object_size = bytes;
        self
    }

    /// Sets how many objects the "many objects" check uses.
    #[must_use]
    pub fn many_objects(mut self, n: usize) -> Self {
        self.many_objects = n;
        self
    }

    /// Runs every check, in order, on `sink`, which must be empty.
    ///
    /// # Panics
    ///
    /// On the first contract violation, with a message saying what.
    pub async fn run(&self, sink: Arc<dyn Sink>) {
        let sink = sink.as_ref();
        check_empty(sink).await;
        check_round_trip_every_kind(sink).await;
        check_create_only(sink).await;
        check_concurrent_create(sink, self.racers).await;
        check_missing(sink).await;
        check_delete_idempotent(sink).await;
        check_ranged_get(sink).await;
        check_binary_and_empty_data(sink).await;
        check_large_object(sink, self.large_object_size).await;
        check_many_objects(sink, self.many_objects).await;
        check_empty(sink).await;
    }
}

/// Runs the whole suite with default settings on an empty `sink`.
///
/// # Panics
///
/// On the first contract violation.
pub async fn run_conformance(sink: Arc<dyn Sink>) {
    Conformance::default().run(sink).await;
}

/// A fresh random file name, as the repository uses (64 hex digits).
pub fn random_name() -> String {
    Id::random().to_hex()
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn pattern(seed: u64, len: usize) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn name_for(kind: FileKind) -> String {
    if kind == FileKind::Config {
        "config".to_owned()
    } else {
        random_name()
    }
}

fn short(data: &[u8]) -> String {
    if data.len() <= 32 {
        format!("{data:?}")
    } else {
        format!("{} bytes, id {}", data.len(), Id::hash(data).short())
    }
}

#[track_caller]
fn fail(sink: &dyn Sink, check: &str, what: &str) -> ! {
    panic!("sink conformance [{check}] on {}: {what}", sink.location())
}

async fn expect_put(
    sink: &dyn Sink,
    check: &str,
    kind: FileKind,
    name: &str,
    data: Bytes,
    mode: PutMode,
) {
    if let Err(e) = sink.put(kind, name, data, mode).await {
        fail(
            sink,
            check,
            &format!("put({kind}, {name}, {mode:?}) failed: {e}"),
        );
    }
}

async fn expect_get(sink: &dyn Sink, check: &str, kind: FileKind, name: &str, expected: &[u8]) {
    match sink.get(kind, name).await {
        Ok(data) if data == expected => {}
        Ok(data) => fail(
            sink,
            check,
            &format!(
                "get({kind}, {name}) returned {} but {} was stored",
                short(&data),
                short(expected)
            ),
        ),
        Err(e) => fail(sink, check, &format!("get({kind}, {name}) failed: {e}")),
    }
}

async fn expect_delete(sink: &dyn Sink, check: &str, kind: FileKind, name: &str) {
    if let Err(e) = sink.delete(kind, name).await {
        fail(sink, check, &format!("delete({kind}, {name}) failed: {e}"));
    }
}

async fn expect_not_found(sink: &dyn Sink, check: &str, kind: FileKind, name: &str) {
    match sink.get(kind, name).await {
        Err(Error::NotFound { .. }) => {}
        Ok(data) => fail(
            sink,
            check,
            &format!(
                "get({kind}, {name}) of a missing file returned {}",
                short(&data)
            ),
        ),
        Err(e) => fail(
            sink,
            check,
            &format!("get({kind}, {name}) of a missing file must be Error::NotFound, got {e:?}"),
        ),
    }
}

async fn listed(sink: &dyn Sink, check: &str, kind: FileKind) -> Vec<(String, u64)> {
    match sink.list(kind).await {
        Ok(list) => {
            let mut out: Vec<_> = list.into_iter().map(|o| (o.name, o.size)).collect();
            out.sort();
            out
        }
        Err(e) => fail(sink, check, &format!("list({kind}) failed: {e}")),
    }
}

/// Every kind lists as empty (not as an error) on an empty sink.
pub async fn check_empty(sink: &dyn Sink) {
    for kind in FileKind::ALL {
        let list = listed(sink, "empty", kind).await;
        if !list.is_empty() {
            fail(
                sink,
                "empty",
                &format!("list({kind}) must be empty on a fresh sink, found {list:?}"),
            );
        }
    }
}

/// Put, list, get and delete a file of every kind.
pub async fn check_round_trip_every_kind(sink: &dyn Sink) {
    const CHECK: &str = "round trip";
    for (i, kind) in FileKind::ALL.into_iter().enumerate() {
        let name = name_for(kind);
        let data = pattern(i as u64 + 1, 100 + i * 37);
        expect_put(sink, CHECK, kind, &name, data.clone(), PutMode::Create).await;
        let list = listed(sink, CHECK, kind).await;
        if !list.contains(&(name.clone(), data.len() as u64)) {
            fail(
                sink,
                CHECK,
                &format!(
                    "after put({kind}, {name}) of {} bytes, list({kind}) gave {list:?}",
                    data.len()
                ),
            );
        }
        for other in FileKind::ALL.into_iter().filter(|k| *k != kind) {
            if listed(sink, CHECK, other)
                .await
                .iter()
                .any(|(n, _)| *n == name)
            {
                fail(
                    sink,
                    CHECK,
                    &format!("{kind} {name} also listed as a {other}"),
                );
            }
        }
        expect_get(sink, CHECK, kind, &name, &data).await;
        expect_delete(sink, CHECK, kind, &name).await;
        expect_not_found(sink, CHECK, kind, &name).await;
        if listed(sink, CHECK, kind)
            .await
            .iter()
            .any(|(n, _)| *n == name)
        {
            fail(
                sink,
                CHECK,
                &format!("{kind} {name} still listed after delete"),
            );
        }
    }
}

/// A second create-only put fails with `AlreadyExists` and leaves the
/// content alone; an overwrite replaces it.
pub async fn check_create_only(sink: &dyn Sink) {
    const CHECK: &str = "create only";
    for kind in [FileKind::Lock, FileKind::Pack, FileKind::Config] {
        let name = name_for(kind);
        let first = Bytes::from_static(b"first version");
        let second = Bytes::from_static(b"second, longer version");
        expect_put(sink, CHECK, kind, &name, first.clone(), PutMode::Create).await;
        match sink.put(kind, &name, second.clone(), PutMode::Create).await {
            Err(Error::AlreadyExists { kind: k, name: n }) if k == kind && n == name => {}
            Err(Error::AlreadyExists { kind: k, name: n }) => fail(
                sink,
                CHECK,
                &format!("AlreadyExists names {k} {n} instead of {kind} {name}"),
            ),
            Ok(()) => fail(sink, CHECK, &format!("a second PutMode::Create of {kind} {name} succeeded")),
            Err(e) => fail(
                sink,
                CHECK,
                &format!("a second PutMode::Create of {kind} {name} must fail with AlreadyExists, got {e:?}"),
            ),
        }
        expect_get(sink, CHECK, kind, &name, &first).await;
        expect_put(sink, CHECK, kind, &name, second.clone(), PutMode::Overwrite).await;
        expect_get(sink, CHECK, kind, &name, &second).await;
        let list = listed(sink, CHECK, kind).await;
        if !list.contains(&(name.clone(), second.len() as u64)) {
            fail(
                sink,
                CHECK,
                &format!("after overwrite, list({kind}) gave {list:?}"),
            );
        }
        // Overwrite also creates.
        let fresh = name_for(FileKind::Index);
        expect_put(
            sink,
            CHECK,
            FileKind::Index,
            &fresh,
            first.clone(),
            PutMode::Overwrite,
        )
        .await;
        expect_get(sink, CHECK, FileKind::Index, &fresh, &first).await;
        expect_delete(sink, CHECK, FileKind::Index, &fresh).await;
        expect_delete(sink, CHECK, kind, &name).await;
    }
}

/// Of several concurrent create-only puts of one name, exactly one wins;
/// the others get `AlreadyExists`, and the stored content is the winner's.
pub async fn check_concurrent_create(sink: &dyn Sink, racers: usize) {
    const CHECK: &str = "concurrent create";
    let racers = racers.max(2);
    for round in 0..3u64 {
        let name = random_name();
        let attempts = (0..racers).map(|i| {
            let data = pattern(round * 100 + i as u64, 64 + i);
            let name = name.clone();
            async move {
                let result = sink
                    .put(FileKind::Lock, &name, data.clone(), PutMode::Create)
                    .await;
                (data, result)
            }
        });
        let results = futures::future::join_all(attempts).await;
        let winners: Vec<&Bytes> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(d, _)| d)
            .collect();
        for (_, result) in &results {
            if let Err(e) = result {
                if !matches!(e, Error::AlreadyExists { .. }) {
                    fail(
                        sink,
                        CHECK,
                        &format!("a losing create must get AlreadyExists, got {e:?}"),
                    );
                }
            }
        }
        if winners.len() != 1 {
            fail(
                sink,
                CHECK,
                &format!(
                    "{} of {racers} concurrent creates of lock {name} succeeded; exactly one must",
                    winners.len()
                ),
            );
        }
        expect_get(sink, CHECK, FileKind::Lock, &name, winners[0]).await;
        expect_delete(sink, CHECK, FileKind::Lock, &name).await;
    }
}

/// Reads of missing files are `NotFound`; deleting them succeeds.
pub async fn check_missing(sink: &dyn Sink) {
    const CHECK: &str = "missing";
    for kind in FileKind::ALL {
        let name = name_for(kind);
        expect_not_found(sink, CHECK, kind, &name).await;
        match sink.get_range(kind, &name, 0..1).await {
            Err(Error::NotFound { .. }) => {}
            other => fail(
                sink,
                CHECK,
                &format!(
                    "get_range({kind}, {name}) of a missing file must be NotFound, got {other:?}"
                ),
            ),
        }
        expect_delete(sink, CHECK, kind, &name).await;
    }
}

/// Deleting twice succeeds; the file is gone afterwards.
pub async fn check_delete_idempotent(sink: &dyn Sink) {
    const CHECK: &str = "delete idempotent";
    let name = random_name();
    expect_put(
        sink,
        CHECK,
        FileKind::Snapshot,
        &name,
        pattern(7, 10),
        PutMode::Create,
    )
    .await;
    expect_delete(sink, CHECK, FileKind::Snapshot, &name).await;
    expect_delete(sink, CHECK, FileKind::Snapshot, &name).await;
    expect_not_found(sink, CHECK, FileKind::Snapshot, &name).await;
    // Recreating after a delete works.
    expect_put(
        sink,
        CHECK,
        FileKind::Snapshot,
        &name,
        pattern(8, 10),
        PutMode::Create,
    )
    .await;
    expect_get(sink, CHECK, FileKind::Snapshot, &name, &pattern(8, 10)).await;
    expect_delete(sink, CHECK, FileKind::Snapshot, &name).await;
}

/// Ranged reads return exactly the requested bytes; ranges past the end
/// are errors.
pub async fn check_ranged_get(sink: &dyn Sink) {
    const CHECK: &str = "ranged get";
    let name = random_name();
    let data = pattern(42, 1000);
    expect_put(
        sink,
        CHECK,
        FileKind::Pack,
        &name,
        data.clone(),
        PutMode::Create,
    )
    .await;
    for range in [0..1, 10..20, 0..1000, 999..1000, 500..900, 5..5, 1000..1000] {
        match sink.get_range(FileKind::Pack, &name, range.clone()).await {
            Ok(got) if got == data[range.start as usize..range.end as usize] => {}
            Ok(got) => fail(
                sink,
                CHECK,
                &format!(
                    "get_range({range:?}) returned {} bytes that differ from the stored ones",
                    got.len()
                ),
            ),
            Err(e) => fail(
                sink,
                CHECK,
                &format!("get_range({range:?}) of a 1000-byte pack failed: {e}"),
            ),
        }
    }
    for range in [990..1001, 1000..1001, 2000..2010, 1001..1001] {
        match sink.get_range(FileKind::Pack, &name, range.clone()).await {
            Err(Error::NotFound { .. }) => fail(
                sink,
                CHECK,
                &format!("get_range({range:?}) past the end reported NotFound; the file exists"),
            ),
            Err(_) => {}
            Ok(got) => fail(
                sink,
                CHECK,
                &format!(
                    "get_range({range:?}) past the end of a 1000-byte pack returned {} bytes instead of an error",
                    got.len()
                ),
            ),
        }
    }
    expect_delete(sink, CHECK, FileKind::Pack, &name).await;
}

/// Every byte value survives; empty files work.
pub async fn check_binary_and_empty_data(sink: &dyn Sink) {
    const CHECK: &str = "binary data";
    let all_bytes: Bytes = (0..=255u8)
        .chain((0..=255u8).rev())
        .collect::<Vec<u8>>()
        .into();
    let name = random_name();
    expect_put(
        sink,
        CHECK,
        FileKind::Index,
        &name,
        all_bytes.clone(),
        PutMode::Create,
    )
    .await;
    expect_get(sink, CHECK, FileKind::Index, &name, &all_bytes).await;
    expect_delete(sink, CHECK, FileKind::Index, &name).await;

    let empty = random_name();
    expect_put(
        sink,
        CHECK,
        FileKind::Key,
        &empty,
        Bytes::new(),
        PutMode::Create,
    )
    .await;
    expect_get(sink, CHECK, FileKind::Key, &empty, b"").await;
    let list = listed(sink, CHECK, FileKind::Key).await;
    if !list.contains(&(empty.clone(), 0)) {
        fail(
            sink,
            CHECK,
            &format!("an empty key file is not listed with size 0: {list:?}"),
        );
    }
    if !matches!(
        sink.put(FileKind::Key, &empty, Bytes::new(), PutMode::Create)
            .await,
        Err(Error::AlreadyExists { .. })
    ) {
        fail(
            sink,
            CHECK,
            "a second create of an empty file must fail with AlreadyExists",
        );
    }
    expect_delete(sink, CHECK, FileKind::Key, &empty).await;
}

/// A large object (above the multipart threshold) round-trips, reads in
/// ranges across part boundaries, and keeps create-only semantics.
pub async fn check_large_object(sink: &dyn Sink, size: usize) {
    const CHECK: &str = "large object";
    let size = size.max(1000);
    let name = random_name();
    let data = pattern(1234, size);
    expect_put(
        sink,
        CHECK,
        FileKind::Pack,
        &name,
        data.clone(),
        PutMode::Create,
    )
    .await;
    expect_get(sink, CHECK, FileKind::Pack, &name, &data).await;
    let size64 = size as u64;
    let mib = 1024 * 1024;
    for range in [
        0..100,
        (5 * mib - 10).min(size64 - 20)..(5 * mib + 10).min(size64),
        size64 - 100..size64,
        size64 / 3..size64 / 3 * 2,
    ] {
        match sink.get_range(FileKind::Pack, &name, range.clone()).await {
            Ok(got) if got == data[range.start as usize..range.end as usize] => {}
            Ok(got) => fail(
                sink,
                CHECK,
                &format!(
                    "get_range({range:?}) of the large pack returned {} wrong bytes",
                    got.len()
                ),
            ),
            Err(e) => fail(
                sink,
                CHECK,
                &format!("get_range({range:?}) of the large pack failed: {e}"),
            ),
        }
    }
    let list = listed(sink, CHECK, FileKind::Pack).await;
    if !list.contains(&(name.clone(), size64)) {
        fail(
            sink,
            CHECK,
            &format!("the large pack is not listed with size {size}: {list:?}"),
        );
    }

    // Create-only for large objects, also when racing.
    let other = pattern(4321, size);
    match sink
        .put(FileKind::Pack, &name, other.clone(), PutMode::Create)
        .await
    {
        Err(Error::AlreadyExists { .. }) => {}
        other => fail(
            sink,
            CHECK,
            &format!("a second large create must fail with AlreadyExists, got {other:?}"),
        ),
    }
    expect_get(sink, CHECK, FileKind::Pack, &name, &data).await;
    expect_put(
        sink,
        CHECK,
        FileKind::Pack,
        &name,
        other.clone(),
        PutMode::Overwrite,
    )
    .await;
    expect_get(sink, CHECK, FileKind::Pack, &name, &other).await;
    expect_delete(sink, CHECK, FileKind::Pack, &name).await;

    let raced = random_name();
    let attempts = (0..3u64).map(|i| {
        let data = pattern(9000 + i, size);
        let raced = raced.clone();
        async move {
            (
                data.clone(),
                sink.put(FileKind::Pack, &raced, data, PutMode::Create)
                    .await,
            )
        }
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
    if winners.len() != 1
        || results
            .iter()
            .any(|(_, r)| matches!(r, Err(e) if !matches!(e, Error::AlreadyExists { .. })))
    {
        let outcomes: Vec<String> = results
            .iter()
            .map(|(_, r)| match r {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.to_string(),
            })
            .collect();
        fail(
            sink,
            CHECK,
            &format!("3 concurrent large creates must give one success and two AlreadyExists, got {outcomes:?}"),
        );
    }
    expect_get(sink, CHECK, FileKind::Pack, &raced, &winners[0].0).await;
    expect_delete(sink, CHECK, FileKind::Pack, &raced).await;
}

/// Many objects are all listed with their sizes, then all deleted.
pub async fn check_many_objects(sink: &dyn Sink, n: usize) {
    const CHECK: &str = "many objects";
    let mut expected: Vec<(String, u64)> = (0..n)
        .map(|i| (random_name(), (i % 50) as u64 + 1))
        .collect();
    expected.sort();
    let written: Result<Vec<()>, (String, Error)> =
        futures::stream::iter(expected.iter().enumerate())
            .map(|(i, (name, size))| async move {
                sink.put(
                    FileKind::Index,
                    name,
                    pattern(i as u64, *size as usize),
                    PutMode::Create,
                )
                .await
                .map_err(|e| (name.clone(), e))
            })
            .buffer_unordered(16)
            .try_collect()
            .await;
    if let Err((name, e)) = written {
        fail(sink, CHECK, &format!("put(index, {name}) failed: {e}"));
    }
    let list = listed(sink, CHECK, FileKind::Index).await;
    if list != expected {
        fail(
            sink,
            CHECK,
            &format!(
                "list(index) returned {} entries, {} were written (or sizes differ)",
                list.len(),
                n
            ),
        );
    }
    let deleted: Result<Vec<()>, (String, Error)> = futures::stream::iter(expected.iter())
        .map(|(name, _)| async move {
            sink.delete(FileKind::Index, name)
                .await
                .map_err(|e| (name.clone(), e))
        })
        .buffer_unordered(16)
        .try_collect()
        .await;
    if let Err((name, e)) = deleted {
        fail(sink, CHECK, &format!("delete(index, {name}) failed: {e}"));
    }
    let left = listed(sink, CHECK, FileKind::Index).await;
    if !left.is_empty() {
        fail(
            sink,
            CHECK,
            &format!("{} index files still listed after deleting all", left.len()),
        );
    }
}
