//! Keys held by AWS KMS, against moto's KMS and IAM (moto[server] 5.2.5):
//! a repository that opens with no password, rotation, a refused
//! `kms:Decrypt`, an unreachable service, and the break-glass password.

use std::collections::BTreeSet;
use std::path::Path;

use backup_testkit::moto::MotoServer;

use crate::util::{assert_same_tree, files_under, random_bytes, write, Scratch};

/// The repository's files and their contents: what must not change when
/// a command is refused.
fn contents(repo: &Path) -> BTreeSet<(String, Vec<u8>)> {
    files_under(repo)
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// `backup` with moto's environment and no password at all.
fn no_password(s: &Scratch, args: &[&str]) -> std::process::Output {
    s.cmd()
        .env_remove("BACKUP_PASSWORD")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn key_list(s: &Scratch) -> Vec<serde_json::Value> {
    let out = no_password(s, &["--json", "key", "list"]);
    assert!(out.status.success(), "key list: {}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn kms_keys_open_rotate_refuse_clearly_and_keep_the_password_way_in() {
    let moto = MotoServer::start();
    let first = moto.kms_create_key();
    let second = moto.kms_create_key();
    let mut s = Scratch::new();
    s.env = moto.env();
    let src = s.path("src");
    write(&src.join("a.bin"), &random_bytes(200_000, 7));
    write(&src.join("etc/conf"), b"listen 5432\n");

    // init with a KMS key and a break-glass password: two keys.
    let created = s.json(&["init", "--kms", &format!("aws:{first}")]);
    assert_eq!(created["password_key"], true, "{created}");
    let keys = key_list(&s);
    let kinds: BTreeSet<&str> = keys.iter().map(|k| k["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(["kms", "password"]), "{keys:?}");
    let kms_key = keys.iter().find(|k| k["kind"] == "kms").unwrap();
    assert_eq!(kms_key["kms"]["key"], first.as_str(), "{kms_key}");
    assert_eq!(kms_key["current"], true, "no password was given: {kms_key}");
    // The key file holds the service's ciphertext, not the master key.
    let stored =
        std::fs::read_to_string(s.path("repo/keys").join(kms_key["id"].as_str().unwrap())).unwrap();
    assert!(
        stored.contains("\"kdf\": \"kms\"") && stored.contains(&first),
        "{stored}"
    );
    assert!(!stored.contains("\"encryption\""), "{stored}");

    // Back up and restore with no password anywhere.
    let out = no_password(&s, &["--json", "create", src.to_str().unwrap()]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let target = s.path("restored");
    let out = no_password(&s, &["restore", "latest", "--to", target.to_str().unwrap()]);
    assert!(out.status.success(), "restore: {}", stderr(&out));
    assert_same_tree(&src, &target);

    // Rotation rewraps under the same key, then moves to another one;
    // the data is untouched and the repository still opens.
    let packs = files_under(&s.path("repo/data"));
    let old_id = kms_key["id"].as_str().unwrap().to_owned();
    let out = no_password(&s, &["key", "rotate-kms"]);
    assert!(out.status.success(), "rotate-kms: {}", stderr(&out));
    assert!(!s.path("repo/keys").join(&old_id).exists());
    let out = no_password(&s, &["key", "rotate-kms", "--to", &format!("aws:{second}")]);
    assert!(out.status.success(), "rotate-kms --to: {}", stderr(&out));
    let keys = key_list(&s);
    let held: Vec<&str> = keys
        .iter()
        .filter_map(|k| k["kms"]["key"].as_str())
        .collect();
    assert_eq!(held, [second.as_str()], "{keys:?}");
    assert_eq!(files_under(&s.path("repo/data")), packs);
    // The first key is no longer needed: disabling it changes nothing.
    moto.kms_disable_key(&first);
    assert!(no_password(&s, &["list"]).status.success());

    // A host whose identity may not decrypt: a clear refusal naming the
    // key and the permission, exit non-zero, nothing changed; the
    // break-glass password still opens it. An allowed identity opens it
    // with no password.
    let (denied_id, denied_secret) = moto.iam_user("web-1", &["kms:Encrypt"]);
    let (allowed_id, allowed_secret) = moto.iam_user("ops", &["kms:Encrypt", "kms:Decrypt"]);
    let before = contents(&s.path("repo"));
    moto.enforce_iam(true);
    let as_user = |id: &str, secret: &str, password: bool, args: &[&str]| {
        let mut c = s.cmd();
        c.env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret);
        if !password {
            c.env_remove("BACKUP_PASSWORD");
        }
        c.args(args).output().unwrap()
    };
    let refused = as_user(&denied_id, &denied_secret, false, &["list"]);
    moto.enforce_iam(false);
    let text = stderr(&refused);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(
        text.contains("kms:Decrypt") && text.contains(&second),
        "{text}"
    );
    assert!(text.contains("password key"), "{text}");
    assert_eq!(contents(&s.path("repo")), before);
    moto.enforce_iam(true);
    let break_glass = as_user(&denied_id, &denied_secret, true, &["list"]);
    let allowed = as_user(&allowed_id, &allowed_secret, false, &["list"]);
    moto.enforce_iam(false);
    assert!(break_glass.status.success(), "{}", stderr(&break_glass));
    assert!(allowed.status.success(), "{}", stderr(&allowed));

    // KMS unreachable: retried, then a clear error; the password still
    // opens the repository.
    s.env.push((
        "AWS_ENDPOINT_URL_KMS".to_owned(),
        format!("http://127.0.0.1:{}", backup_testkit::free_port()),
    ));
    let started = std::time::Instant::now();
    let out = no_password(&s, &["list"]);
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("kms:Decrypt") && text.contains("failed 4 times"),
        "{text}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    s.ok(&["list"]);
    // init against an unreachable KMS writes nothing.
    let fresh = Scratch::with_repo(s.path("other").display().to_string(), s.env.clone());
    let out = no_password(&fresh, &["init", "--kms", &format!("aws:{second}")]);
    assert!(!out.status.success());
    assert!(!s.path("other").join("config").exists());
    assert!(files_under(&s.path("other")).is_empty());
}
