//! The same round trip through S3 (an in-process S3 server) and Google
//! Cloud Storage (an in-process fake of the XML API).

use backup_testkit::gcs::GcsServer;
use backup_testkit::s3::S3Server;

use crate::roundtrip::fidelity_tree;
use crate::util::{assert_same_tree, Scratch};

fn round_trip(s: &Scratch) {
    let src = s.path("src");
    fidelity_tree(&src);
    // Small multipart threshold so that packs go up in parts.
    let opts = [
        "-o",
        "multipart.threshold=8MiB",
        "-o",
        "multipart.part-size=5MiB",
    ];
    let with = |args: &[&str]| -> Vec<String> {
        opts.iter()
            .chain(args.iter())
            .map(|a| (*a).to_owned())
            .collect()
    };
    let run = |args: &[&str]| {
        let a = with(args);
        s.ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    run(&["init", "--pack-size", "12MiB"]);
    run(&["create", src.to_str().unwrap()]);
    let second = run(&["create", src.to_str().unwrap()]);
    assert!(second.contains("unchanged"), "{second}");
    let out = s.path("restored");
    run(&["restore", "latest", "--to", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    let verify = run(&["verify", "--read-data"]);
    assert!(verify.contains("no problems found"), "{verify}");
}

#[test]
fn s3_round_trip() {
    let server = S3Server::start();
    let s = Scratch::with_repo(server.url("team/repo"), server.env());
    round_trip(&s);
    let reqs = server.requests();
    assert!(
        reqs.iter().any(|r| r.contains("uploadId")),
        "no multipart upload seen"
    );
    assert!(
        reqs.iter().any(|r| r.ends_with("[conditional]")),
        "no conditional put seen"
    );
}

#[test]
fn gcs_round_trip() {
    let server = GcsServer::start();
    let s = Scratch::with_repo(server.url("team/repo"), server.env());
    round_trip(&s);
    assert!(server
        .object_names(server.bucket())
        .iter()
        .any(|n| n.starts_with("team/repo/data/")));
}
