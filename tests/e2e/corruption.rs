//! Damaged repository files are detected and never restored silently.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{files_under, random_bytes, write, Scratch};

fn flip(path: &Path, offset: usize) {
    let mut data = fs::read(path).unwrap();
    let at = offset.min(data.len() - 1);
    data[at] ^= 0x55;
    fs::write(path, data).unwrap();
}

fn only_file(dir: &Path) -> PathBuf {
    let files = files_under(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

/// Two snapshots of two different trees.
fn two_snapshots(s: &Scratch) -> (String, String) {
    s.init();
    let a = s.path("a");
    write(&a.join("data.bin"), &random_bytes(5_000_000, 1));
    let (ida, _) = s.create(&a, &[]);
    let b = s.path("b");
    write(&b.join("other.bin"), &random_bytes(5_000_000, 2));
    let (idb, _) = s.create(&b, &[]);
    (ida, idb)
}

/// The data pack written by the snapshot `id` (the largest new pack).
fn data_pack_of(s: &Scratch, before: &[PathBuf]) -> PathBuf {
    files_under(&Path::new(&s.repo).join("data"))
        .into_iter()
        .filter(|p| !before.contains(p))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn flipped_byte_in_a_pack() {
    let s = Scratch::new();
    s.init();
    let a = s.path("a");
    write(&a.join("data.bin"), &random_bytes(5_000_000, 1));
    let (ida, _) = s.create(&a, &[]);
    let packs_a = files_under(&Path::new(&s.repo).join("data"));
    let b = s.path("b");
    write(&b.join("other.bin"), &random_bytes(5_000_000, 2));
    let (idb, _) = s.create(&b, &[]);
    let pack_b = data_pack_of(&s, &packs_a);
    flip(&pack_b, 1_000_000);

    let err = s.fails(&["verify", "--read-data"], 3);
    assert!(err.contains(&format!("affected snapshot: {idb}")), "{err}");
    assert!(!err.contains(&ida), "{err}");
    // Restoring the damaged file fails loudly and leaves no corrupt file.
    let out = s.path("out");
    let err = s.fails(&["restore", &idb, "--to", out.to_str().unwrap()], 3);
    assert!(err.contains("damage"), "{err}");
    assert!(!out.join("other.bin").exists());
    // The undamaged snapshot still restores.
    let out2 = s.path("out2");
    s.ok(&["restore", &ida, "--to", out2.to_str().unwrap()]);
    assert_eq!(
        fs::read(out2.join("data.bin")).unwrap(),
        random_bytes(5_000_000, 1)
    );
}

#[test]
fn flipped_byte_in_an_index_file() {
    let s = Scratch::new();
    let (ida, idb) = two_snapshots(&s);
    // Damage the index file written by the second backup (the newest).
    let index = files_under(&Path::new(&s.repo).join("index"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    flip(&index, 40);
    let err = s.fails(&["verify", "--read-data"], 3);
    assert!(err.contains("damage: index"), "{err}");
    assert!(err.contains(&format!("affected snapshot: {idb}")), "{err}");
    let out = s.path("out");
    let err = s.fails(&["restore", &ida, "--to", out.to_str().unwrap()], 3);
    assert!(err.contains("index"), "{err}");
    assert!(!out.exists());
}

#[test]
fn flipped_byte_in_a_snapshot_file() {
    let s = Scratch::new();
    let (ida, idb) = two_snapshots(&s);
    let snap = Path::new(&s.repo).join("snapshots").join(&idb);
    flip(&snap, 30);
    let err = s.fails(&["verify"], 3);
    assert!(err.contains(&format!("affected snapshot: {idb}")), "{err}");
    // Listing still works and warns about the damaged file.
    let out = s.run(&["list"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&idb));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&ida[..8]));
    let err = s.fails(&["restore", &idb, "--to", s.path("x").to_str().unwrap()], 3);
    assert!(err.contains("snapshot"), "{err}");
    let _ = only_file;
}
