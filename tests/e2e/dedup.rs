//! Deduplication across backups.

use std::fs;

use crate::util::{random_bytes, write, Scratch};

fn stat(v: &serde_json::Value, k: &str) -> u64 {
    v["snapshot"]["stats"][k].as_u64().unwrap()
}

#[test]
fn unchanged_tree_stores_under_one_percent() {
    let s = Scratch::new();
    let src = s.path("src");
    // About 100 MB: 40 files of 2 MB random data and 2000 small text files.
    for i in 0..40 {
        write(
            &src.join(format!("bin/{i:02}.dat")),
            &random_bytes(2_000_000, i),
        );
    }
    for i in 0..2000u64 {
        let text = format!("file {i}\n").repeat(1000 + (i as usize % 50) * 100);
        write(
            &src.join(format!("text/{:02}/{i}.txt", i % 37)),
            text.as_bytes(),
        );
    }
    s.init();
    let (_, first) = s.create(&src, &[]);
    let logical = stat(&first, "logical_bytes");
    assert!(logical > 95_000_000, "{logical}");
    let (_, second) = s.create(&src, &[]);
    assert_eq!(stat(&second, "files_unchanged"), 2040);
    assert_eq!(stat(&second, "bytes_read"), 0);
    assert!(stat(&second, "bytes_stored") * 100 < logical, "{second}");
    // Without the parent shortcut every file is read, and still nothing new is stored.
    let (_, third) = s.create(&src, &["--no-parent"]);
    assert_eq!(stat(&third, "bytes_read"), logical);
    assert!(stat(&third, "bytes_stored") * 100 < logical, "{third}");
}

#[test]
fn one_byte_insertion_stores_only_a_few_chunks() {
    let s = Scratch::new();
    let src = s.path("src");
    let mut data = random_bytes(64 * 1024 * 1024, 99);
    write(&src.join("large.img"), &data);
    s.init();
    let (_, first) = s.create(&src, &[]);
    assert!(stat(&first, "blobs_added") > 40);
    data.insert(32 * 1024 * 1024, 0x42);
    fs::write(src.join("large.img"), &data).unwrap();
    let (id, second) = s.create(&src, &[]);
    // One or two data chunks around the insertion, plus the changed trees.
    let added = stat(&second, "bytes_added");
    assert!(stat(&second, "blobs_added") <= 5, "{second}");
    assert!(added < 10 * 1024 * 1024, "{added}");
    let out = s.path("out");
    s.ok(&["restore", &id, "--to", out.to_str().unwrap()]);
    assert!(fs::read(out.join("large.img")).unwrap() == data);
}
