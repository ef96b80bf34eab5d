//! Restoring files into a directory that holds files already (issue 34):
//! `--overwrite never|if-changed|always`, `--delete`, `--verify`.

use std::fs;
use std::path::Path;

use crate::util::{assert_same_tree, set_mtime, write, Scratch};

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

#[test]
fn restores_over_existing_files_mirror_and_verify() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a.txt"), b"the snapshot's a\n");
    write(&src.join("dir/b.txt"), b"the snapshot's b\n");
    write(&src.join("dir/c.txt"), b"the snapshot's c\n");
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    set_mtime(&src.join("dir/b.txt"), 1_600_000_000, 5);
    set_mtime(&src.join("dir/c.txt"), 1_600_000_000, 6);
    s.create(&src, &[]);
    let t = s.path("target");
    let t_arg = t.to_str().unwrap();
    // The directory as a host has it: a changed, an unchanged and a
    // same-looking file, something the snapshot lacks, and a directory
    // where the snapshot has a link.
    let reset = || {
        let _ = fs::remove_dir_all(&t);
        write(&t.join("a.txt"), b"changed on the host\n");
        write(&t.join("dir/b.txt"), b"the snapshot's b\n");
        set_mtime(&t.join("dir/b.txt"), 1_600_000_000, 5);
        // Same size and time as the snapshot's c, other bytes.
        write(&t.join("dir/c.txt"), b"THE SNAPSHOT'S C\n");
        set_mtime(&t.join("dir/c.txt"), 1_600_000_000, 6);
        write(&t.join("extra.txt"), b"only on the host\n");
        write(&t.join("link/inside"), b"a directory in the way\n");
    };
    reset();

    // Without --overwrite a non-empty directory is refused, unchanged.
    let err = s.fails(&["restore", "latest", "--to", t_arg], 1);
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(read(&t.join("a.txt")), "changed on the host\n");

    // never: what exists stays; what is missing is added.
    fs::remove_file(t.join("dir/b.txt")).unwrap();
    let out = s.ok(&["restore", "latest", "--to", t_arg, "--overwrite", "never"]);
    assert!(
        out.contains("entries already there were left as they were"),
        "{out}"
    );
    assert_eq!(read(&t.join("a.txt")), "changed on the host\n");
    assert_eq!(read(&t.join("dir/b.txt")), "the snapshot's b\n");
    assert!(t.join("link/inside").exists());
    assert!(t.join("extra.txt").exists());

    // if-changed: a differing file is replaced, a matching one kept (by
    // size and time: c's other bytes stay, and --verify says so).
    reset();
    let err = s.fails(
        &[
            "restore",
            "latest",
            "--to",
            t_arg,
            "--overwrite",
            "if-changed",
            "--verify",
        ],
        1,
    );
    assert!(
        err.contains("--verify: 1 differences") && err.contains("c.txt"),
        "{err}"
    );
    assert_eq!(read(&t.join("a.txt")), "the snapshot's a\n");
    assert_eq!(read(&t.join("dir/c.txt")), "THE SNAPSHOT'S C\n");
    assert!(fs::symlink_metadata(t.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());

    // A dry run of a mirror says what it would remove, and removes nothing.
    let out = s.ok(&[
        "restore",
        "latest",
        "--to",
        t_arg,
        "--overwrite",
        "always",
        "--delete",
        "--dry-run",
    ]);
    assert!(out.contains("--delete would remove 1 entries"), "{out}");
    assert!(t.join("extra.txt").exists());

    // always + delete + verify: the directory is the snapshot.
    let out = s.ok(&[
        "restore",
        "latest",
        "--to",
        t_arg,
        "--overwrite",
        "always",
        "--delete",
        "--verify",
    ]);
    assert!(
        out.contains("removed 1 entries the snapshot lacks"),
        "{out}"
    );
    assert!(out.contains("verified: 3 files"), "{out}");
    assert_same_tree(&src, &t);
    let leftovers: Vec<_> = fs::read_dir(&t)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".backup-restore")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Combinations that cannot do what they say are refused up front.
    for (args, says) in [
        (vec!["--delete"], "give --overwrite too"),
        (
            vec!["--overwrite", "always", "--delete", "--include", "a.txt"],
            "cannot be combined with --include",
        ),
        (
            vec!["--overwrite", "never", "--verify"],
            "use if-changed or always",
        ),
    ] {
        let mut full = vec!["restore", "latest", "--to", t_arg];
        full.extend(args.iter().copied());
        let err = s.fails(&full, 2);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A database target refuses the file options.
    let err = s.fails(
        &[
            "restore",
            "latest",
            "--to",
            "redis://127.0.0.1:1",
            "--overwrite",
            "always",
        ],
        2,
    );
    assert!(err.contains("apply to file restores"), "{err}");
}
