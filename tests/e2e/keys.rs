//! Key management: several passwords, password change, escrow export.

use crate::util::{write, Scratch, PASSWORD};

#[test]
fn add_remove_change_and_export_keys() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("f"), b"secret data");
    s.create(&src, &[]);
    let pw2 = s.path("pw2");
    std::fs::write(&pw2, "second password\n").unwrap();
    s.ok(&["key", "add", "--new-password-file", pw2.to_str().unwrap()]);
    let keys = s.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    // Both passwords open the repository; the second through a file.
    s.cmd()
        .env_remove("BACKUP_PASSWORD")
        .args(["--password-file", pw2.to_str().unwrap(), "list"])
        .assert()
        .success();
    // The key in use cannot be removed; the other one can.
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let err = s.fails(&["key", "remove", &current[..8]], 2);
    assert!(err.contains("in use"), "{err}");
    s.ok(&["key", "remove", &other[..8]]);
    s.cmd()
        .env_remove("BACKUP_PASSWORD")
        .args(["--password-file", pw2.to_str().unwrap(), "list"])
        .assert()
        .code(1);
    // Escrow export, then change the password.
    let escrow = s.path("escrow.key");
    let pw3 = s.path("pw3");
    std::fs::write(&pw3, "escrow password").unwrap();
    s.ok(&[
        "key",
        "export",
        "--to",
        escrow.to_str().unwrap(),
        "--new-password-file",
        pw3.to_str().unwrap(),
    ]);
    let pw4 = s.path("pw4");
    std::fs::write(&pw4, "new main password").unwrap();
    s.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        pw4.to_str().unwrap(),
    ]);
    s.fails(&["list"], 1); // the old password is gone
    s.cmd()
        .env("BACKUP_PASSWORD", "new main password")
        .args(["list"])
        .assert()
        .success();
    // The escrow key opens the repository without any stored key matching.
    let out = s.path("restored");
    s.cmd()
        .env("BACKUP_PASSWORD", "escrow password")
        .args([
            "--key-file",
            escrow.to_str().unwrap(),
            "restore",
            "latest",
            "--to",
            out.to_str().unwrap(),
        ])
        .assert()
        .success();
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"secret data");
    let _ = PASSWORD;
}

#[test]
fn unencrypted_repository() {
    let s = Scratch::new();
    s.ok(&["init", "--insecure-no-encryption"]);
    let src = s.path("src");
    write(&src.join("f"), &b"plain text ".repeat(1000));
    s.cmd()
        .env_remove("BACKUP_PASSWORD")
        .args(["create", src.to_str().unwrap()])
        .assert()
        .success();
    let out = s.path("out");
    s.cmd()
        .env_remove("BACKUP_PASSWORD")
        .args(["restore", "latest", "--to", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(out.join("f")).unwrap(),
        b"plain text ".repeat(1000)
    );
    s.fails(&["key", "list"], 2);
}
