//! Entries in the shapes real mongod logs (MongoDB's documentation of
//! the oplog and of transactions: `applyOps` with `partialTxn` chains,
//! prepared transactions committed by `commitTransaction`, aborted
//! chains, `$v:2` diffs, `$v:1` updates, two-phase index builds),
//! replayed into a real server (`SecantusDB`, which has no `applyOps`
//! of its own: the replayer unpacks them).

use super::*;
use backup_testkit::mongo::MongoServer;
use mongodb::bson::{spec::BinarySubtype, Binary, Timestamp};

fn lsid(n: u8) -> Document {
    doc! {"id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![n; 16] }, "uid": Binary { subtype: BinarySubtype::Generic, bytes: vec![0; 32] }}
}

fn entry(i: u32, mut e: Document) -> Vec<u8> {
    e.insert(
        "ts",
        Timestamp {
            time: 1_700_000_000,
            increment: i,
        },
    );
    e.insert("t", 1_i64);
    e.insert("v", 2_i64);
    let mut raw = Vec::new();
    e.to_writer(&mut raw).unwrap();
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // One sequence of entries and its result.
async fn mongod_entry_formats_replay_into_a_real_server() {
    let server = MongoServer::start();
    let url = server.url("");
    let conn = Conn::new(&url, super::super::super::conn::Side::Target)
        .await
        .unwrap();
    // Everything of `shop` goes to `shop_r`.
    let map = |db: &str, coll: &str| -> Option<(String, String)> {
        (db == "shop").then(|| ("shop_r".to_owned(), coll.to_owned()))
    };
    let uuid = Binary {
        subtype: BinarySubtype::Uuid,
        bytes: vec![7; 16],
    };
    let entries = vec![
        doc! {"op": "c", "ns": "shop.$cmd", "ui": uuid.clone(), "o": {"create": "orders", "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}},
        doc! {"op": "i", "ns": "shop.orders", "ui": uuid.clone(), "o": {"_id": 1, "a": 1, "gone": true, "arr": [1, 2, 3], "sub": {"k": 0}}, "o2": {"_id": 1}},
        // {$set: {a: 5, b: "x", "sub.k": 2, "arr.1": 9}, $unset: {gone: 1}}, arr cut to 2.
        doc! {"op": "u", "ns": "shop.orders", "ui": uuid.clone(), "o2": {"_id": 1}, "o": {"$v": 2, "diff": {
            "d": {"gone": false}, "u": {"a": 5}, "i": {"b": "x"},
            "ssub": {"u": {"k": 2}}, "sarr": {"a": true, "l": 2, "u1": 9},
        }}},
        doc! {"op": "u", "ns": "shop.orders", "ui": uuid.clone(), "o2": {"_id": 1}, "o": {"$v": 1, "$set": {"c": 1}}},
        doc! {"op": "n", "ns": "", "o": {"msg": "periodic noop"}},
        // A large transaction: two partial entries, then the last one.
        doc! {"op": "c", "ns": "admin.$cmd", "lsid": lsid(1), "txnNumber": 1_i64, "o": {"applyOps": [
            {"op": "i", "ns": "shop.orders", "ui": uuid.clone(), "o": {"_id": 2}},
        ], "partialTxn": true}},
        doc! {"op": "c", "ns": "admin.$cmd", "lsid": lsid(1), "txnNumber": 1_i64, "o": {"applyOps": [
            {"op": "i", "ns": "shop.orders", "ui": uuid.clone(), "o": {"_id": 3}},
        ], "partialTxn": true}},
        doc! {"op": "c", "ns": "admin.$cmd", "lsid": lsid(1), "txnNumber": 1_i64, "o": {"applyOps": [
            {"op": "u", "ns": "shop.orders", "ui": uuid.clone(), "o2": {"_id": 2}, "o": {"$v": 2, "diff": {"i": {"t": true}}}},
        ], "count": 3_i64}},
        // An aborted chain leaves nothing.
        doc! {"op": "c", "ns": "admin.$cmd", "lsid": lsid(2), "txnNumber": 4_i64, "o": {"applyOps": [
            {"op": "i", "ns": "shop.orders", "ui": uuid.clone(), "o": {"_id": 4}},
        ], "partialTxn": true}},
        doc! {"op": "c", "ns": "admin.$cmd", "lsid": lsid(2), "txnNumber": 4_i64, "o": {"abortTransaction": 1}},
        // A prepared transaction, committed later.
        doc! {"op": "c", "ns": "admin.$cmd", "lsid": lsid(3), "txnNumber": 9_i64, "o": {"applyOps": [
            {"op": "i", "ns": "shop.orders", "ui": uuid.clone(), "o": {"_id": 5}},
            {"op": "d", "ns": "shop.orders", "ui": uuid.clone(), "o": {"_id": 3}},
        ], "prepare": true}},
        doc! {"op": "c", "ns": "admin.$cmd", "lsid": lsid(3), "txnNumber": 9_i64, "o": {"commitTransaction": 1, "commitTimestamp": Timestamp { time: 1_700_000_000, increment: 11 }}},
        // A two-phase index build.
        doc! {"op": "c", "ns": "shop.$cmd", "ui": uuid.clone(), "o": {"startIndexBuild": "orders", "indexBuildUUID": uuid.clone(), "indexes": [{"v": 2, "key": {"a": 1}, "name": "a_1"}]}},
        doc! {"op": "c", "ns": "shop.$cmd", "ui": uuid.clone(), "o": {"commitIndexBuild": "orders", "indexBuildUUID": uuid.clone(), "indexes": [{"v": 2, "key": {"a": 1}, "name": "a_1"}]}},
        // Another database: not selected.
        doc! {"op": "i", "ns": "other.x", "o": {"_id": 1}},
        // A transaction left open at the end is left out.
        doc! {"op": "c", "ns": "admin.$cmd", "lsid": lsid(4), "txnNumber": 1_i64, "o": {"applyOps": [
            {"op": "i", "ns": "shop.orders", "ui": uuid.clone(), "o": {"_id": 6}},
        ], "partialTxn": true}},
    ];
    let mut replayer = Replayer::new(Some(&conn), &map, 2);
    replayer.after_snapshot();
    for (i, e) in entries.into_iter().enumerate() {
        replayer
            .entry(&entry(u32::try_from(i).unwrap() + 1, e))
            .await
            .unwrap();
    }
    let report = replayer.finish().await.unwrap();
    assert_eq!(report.transactions_left_out, 1);
    assert_eq!(report.indexes_built, 1);
    assert_eq!(report.entries, 16);

    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    let orders = client.database("shop_r").collection::<Document>("orders");
    let docs: Vec<Document> = orders
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(
        docs,
        vec![
            doc! {"_id": 1, "a": 5, "arr": [1, 9], "sub": {"k": 2}, "b": "x", "c": 1},
            doc! {"_id": 2, "t": true},
            doc! {"_id": 5},
        ]
    );
    let names: Vec<String> = orders
        .list_index_names()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(names.contains(&"a_1".to_owned()), "{names:?}");
    assert!(!client
        .list_database_names()
        .await
        .unwrap()
        .contains(&"other".to_owned()));

    // An unknown command stops the replay with its name.
    let mut replayer = Replayer::new(Some(&conn), &map, 1);
    let e = replayer
        .entry(&entry(
            100,
            doc! {"op": "c", "ns": "shop.$cmd", "o": {"frobnicate": "orders"}},
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("frobnicate"), "{e}");
}
