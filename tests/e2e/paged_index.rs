//! A repository whose index is paged to disk and kept between runs
//! (issue 32), with the memory limit set low so that a small repository
//! pages: every operation answers as with the index in memory, and a
//! persisted index that is damaged or out of date is not used.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{assert_same_tree, random_bytes, write, Scratch};

fn stat(v: &serde_json::Value, k: &str) -> u64 {
    v["snapshot"]["stats"][k].as_u64().unwrap()
}

/// The persisted index files under the scratch home's cache.
fn persisted(s: &Scratch) -> Vec<PathBuf> {
    let dir = s.path(".cache/backup/index");
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "table"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn copy_tree(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::create_dir_all(to).unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_paged_index_backs_up_restores_checks_and_prunes() {
    let mut s = Scratch::new();
    // 40 blobs in memory; past that, tables on disk.
    s.env
        .push(("BACKUP_INDEX_MEMORY_BLOBS".into(), "40".into()));
    s.init();
    let src = s.path("src");
    for i in 0..60u64 {
        write(&src.join(format!("f{i:02}")), &random_bytes(20_000, i));
    }
    s.create(&src, &[]);
    // The first backup found an empty index: nothing paged, nothing kept.
    assert!(persisted(&s).is_empty());

    // The second loads 61 blobs, pages them and keeps them.
    write(&src.join("f00"), &random_bytes(20_000, 100));
    write(&src.join("f01"), &random_bytes(20_000, 101));
    let (_, second) = s.create(&src, &[]);
    assert_eq!(stat(&second, "blobs_added"), 3, "{second}");
    let tables = persisted(&s);
    assert_eq!(tables.len(), 1, "{tables:?}");
    let kept = fs::read(&tables[0]).unwrap();

    // The third reads the kept index and the second's index file (3 blobs,
    // under a tenth of the limit: the kept file stays as it is), and finds
    // a copy of a file stored.
    fs::copy(src.join("f30"), src.join("copy-of-f30")).unwrap();
    let (third_id, third) = s.create(&src, &[]);
    assert_eq!(stat(&third, "blobs_added"), 1, "only the tree: {third}");
    let third_tree = s.path("third");
    copy_tree(&src, &third_tree);
    assert_eq!(
        fs::read(&tables[0]).unwrap(),
        kept,
        "the kept index was rewritten"
    );

    // Damaged: not used (every index file is read) and written again.
    let mut bad = kept.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x40;
    fs::write(&tables[0], &bad).unwrap();
    fs::copy(src.join("f31"), src.join("copy-of-f31")).unwrap();
    let (_, fourth) = s.create(&src, &["--no-parent"]);
    assert_eq!(stat(&fourth, "blobs_added"), 1, "{fourth}");
    assert_eq!(stat(&fourth, "bytes_read"), stat(&fourth, "logical_bytes"));
    let rewritten = fs::read(&tables[0]).unwrap();
    assert_ne!(rewritten, bad);

    // Prune replaces every index file: the kept index covers files that
    // are gone and is rebuilt at the next load.
    s.ok(&["forget", "--keep-last", "2", "--prune"]);
    fs::copy(src.join("f32"), src.join("copy-of-f32")).unwrap();
    let (last, fifth) = s.create(&src, &[]);
    assert_eq!(stat(&fifth, "blobs_added"), 1, "{fifth}");
    assert_ne!(fs::read(&tables[0]).unwrap(), rewritten);
    assert!(s
        .ok(&["check", "--read-data"])
        .contains("no problems found"));
    let out = s.path("out");
    s.ok(&["restore", &last, "--to", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    let older = s.path("older");
    s.ok(&["restore", &third_id, "--to", older.to_str().unwrap()]);
    // (The copy kept of that tree has new times: compare contents.)
    let names = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&third_tree), names(&older));
    for n in names(&older) {
        assert_eq!(
            fs::read(third_tree.join(&n)).unwrap(),
            fs::read(older.join(&n)).unwrap()
        );
    }
}
