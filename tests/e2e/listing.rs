//! Listing, filtering, showing and statistics.

use crate::util::{random_bytes, write, Scratch};

#[test]
fn list_filters_show_and_stats() {
    let s = Scratch::new();
    s.init();
    let a = s.path("a");
    let b = s.path("b");
    write(&a.join("x"), &random_bytes(300_000, 1));
    write(&b.join("y"), &b"compressible ".repeat(100_000));
    s.create(&a, &["--tag", "daily", "--time", "2024-01-01T00:00:00Z"]);
    s.create(
        &a,
        &[
            "--tag",
            "weekly",
            "--tag",
            "daily",
            "--time",
            "2024-02-01T00:00:00Z",
        ],
    );
    let (idb, _) = s.create(&b, &["--time", "2024-03-01T12:00:00+02:00"]);
    let count = |args: &[&str]| {
        let mut v = vec!["list"];
        v.extend_from_slice(args);
        s.json(&v).as_array().unwrap().len()
    };
    assert_eq!(count(&[]), 3);
    assert_eq!(count(&["--tag", "daily"]), 2);
    assert_eq!(count(&["--tag", "daily", "--tag", "weekly"]), 1);
    assert_eq!(count(&["--source", a.to_str().unwrap()]), 2);
    assert_eq!(count(&["--source", "files"]), 3);
    assert_eq!(count(&["--before", "2024-02-01"]), 1);
    assert_eq!(count(&["--after", "2024-02-01"]), 2);
    assert_eq!(
        count(&["--after", "2024-01-15", "--before", "2024-03-01"]),
        1
    );
    let text = s.ok(&["snapshots"]);
    assert!(text.contains("3 snapshots"), "{text}");
    assert!(text.contains(&idb[..8]));
    let shown = s.json(&["show", "latest", "--source", a.to_str().unwrap()]);
    assert_eq!(shown["snapshot"]["time"], "2024-02-01T00:00:00Z");
    let shown = s.json(&["show", "latest"]);
    assert_eq!(shown["id"], idb);
    let text = s.ok(&["show", &idb[..6]]);
    assert!(text.contains("2024-03-01T10:00:00"), "{text}");
    let st = s.json(&["stats"]);
    assert_eq!(st["total"]["snapshots"], 3);
    assert!(
        st["sources"][b.to_str().unwrap()]["compression_ratio"]
            .as_f64()
            .unwrap()
            > 10.0,
        "{st}"
    );
    assert!(
        (st["sources"][a.to_str().unwrap()]["dedup_ratio"]
            .as_f64()
            .unwrap()
            - 2.0)
            .abs()
            < 0.01,
        "{st}"
    );
    assert!(st["repository_bytes"].as_u64().unwrap() > 300_000);
    assert!(s.ok(&["stats"]).contains("dedup"));
    let err = s.fails(&["list", "--before", "yesterday-ish"], 2);
    assert!(err.contains("not a time"), "{err}");
}
