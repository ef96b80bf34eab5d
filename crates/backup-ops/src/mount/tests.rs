use serde_json::json;

use super::*;

#[test]
fn names_are_one_component() {
    assert_eq!(file_name("orders"), "orders");
    assert_eq!(file_name("a/b"), "a%2Fb");
    assert_eq!(file_name("50%"), "50%25");
    assert_eq!(file_name("."), "%2E");
    assert_eq!(file_name(".."), "%2E.");
    assert_eq!(file_name(""), "%");
    assert_eq!(file_name("nul\0"), "nul%00");
}

#[test]
fn times_before_and_after_the_epoch() {
    assert_eq!(
        time_of_ns(1_500_000_000),
        UNIX_EPOCH + Duration::from_millis(1500)
    );
    assert_eq!(
        time_of_ns(-500_000_000),
        UNIX_EPOCH - Duration::from_millis(500)
    );
}

#[test]
fn postgres_tables_and_mongodb_collections_as_files() {
    let pg = json!({
        "database": "app",
        "tables": [
            {"schema": "sales", "name": "orders", "rows": 3},
            {"schema": "sales", "name": "all", "kind": "partitioned"},
            {"schema": "odd", "name": "a/b", "rows": 1},
        ]
    });
    let items = items_of("postgres", &pg).unwrap();
    assert_eq!(
        items,
        vec![
            ItemFile {
                place: vec!["app".into(), "sales".into(), "orders.csv".into()],
                path: "app/sales/orders".into(),
                format: ItemFormat::Csv,
            },
            ItemFile {
                place: vec!["app".into(), "odd".into(), "a%2Fb.csv".into()],
                path: "odd.a/b".into(),
                format: ItemFormat::Csv,
            },
        ]
    );
    let mongo = json!({
        "collections": [
            {"db": "shop", "name": "orders", "kind": "collection", "documents": 2},
            {"db": "shop", "name": "recent", "kind": "view"},
        ]
    });
    assert_eq!(
        items_of("mongodb", &mongo).unwrap(),
        vec![ItemFile {
            place: vec!["shop".into(), "orders.json".into()],
            path: "shop/orders".into(),
            format: ItemFormat::Json,
        }]
    );
    assert!(items_of("redis", &json!({"databases": {"0": {"keys": 1}}})).is_none());
    assert!(items_of("files", &json!({})).is_none());
}

#[test]
fn byte_names_are_one_component_as_text_names_are() {
    use std::os::unix::ffi::OsStrExt;
    assert_eq!(file_name_bytes(b"user:1"), OsStr::new("user:1"));
    assert_eq!(
        file_name_bytes(b"\xffa/b%\0").as_bytes(),
        b"\xffa%2Fb%25%00"
    );
    for name in ["a/b", ".", "..", "", "50%", "nul\0", "...", "plain"] {
        assert_eq!(
            file_name_bytes(name.as_bytes()),
            OsStr::new(&file_name(name)),
            "{name:?}"
        );
    }
}
