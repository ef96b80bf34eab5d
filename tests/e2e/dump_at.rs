//! `backup dump SNAPSHOT COLLECTION --at TIME` (issue 33): a MongoDB
//! collection as it was at a time, from a base snapshot and the oplog
//! captured by `backup oplog follow`, compared byte for byte with what the
//! live `SecantusDB` collection held at that time (recorded by the test
//! in the server's natural order, as a collection scan returns it) and
//! with `backup dump` of a snapshot taken then; and the refusals: a time
//! outside the captured window, a collection dropped by then, one renamed
//! into, a snapshot of another kind.

use std::time::Duration;

use backup_testkit::mongo::MongoServer;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::sync::Client;

use crate::mongo_pitr::{newest, wait_stored, Follower};
use crate::util::Scratch;

/// The documents of `db.coll` as raw BSON in natural order (what a
/// collection scan, and so a backup, reads).
fn natural(c: &Client, db: &str, coll: &str) -> Vec<u8> {
    c.database(db)
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .run()
        .unwrap()
        .flat_map(|d| d.unwrap().into_bytes())
        .collect()
}

fn out(s: &Scratch, args: &[&str]) -> Vec<u8> {
    let o = s.run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// Sleeps past the current second, so that the writes before and after a
/// recorded time never share an oplog second with it.
fn tick() {
    std::thread::sleep(Duration::from_millis(1100));
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
#[allow(clippy::too_many_lines)] // One scenario: the capture, then dumps and refusals against it.
fn dump_a_collection_at_a_time_from_the_captured_oplog() {
    let m = MongoServer::start();
    let c = Client::with_uri_str(m.url("")).unwrap();
    let s = Scratch::new();
    s.init();
    let url = m.url("");
    let shop = c.database("shop");
    let orders = shop.collection::<Document>("orders");
    orders
        .insert_many((0..50).map(|i| {
            doc! {"_id": i, "sku": format!("s{i}"), "qty": i, "note": "n", "hist": [1, 2, 3], "meta": {"a": 1}}
        }))
        .run()
        .unwrap();
    for coll in ["temp", "gone", "src"] {
        shop.collection::<Document>(coll)
            .insert_many((0..3).map(|i| doc! {"_id": i, "v": coll}))
            .run()
            .unwrap();
    }
    let base = s.json(&["create", &url]);
    let base_id = base["id"].as_str().unwrap().to_owned();
    let before_base = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    // Started after the base: it resumes right after the base's oplog.
    let follower = Follower::start(&s, &url);

    // Phase A: updates of every shape, inserts, deletes, a replacement,
    // a transaction.
    for i in 0..10 {
        orders
            .update_one(
                doc! {"_id": i},
                doc! {"$set": {"qty": 100 + i, "meta.b": i, "added": true}, "$unset": {"note": ""}, "$push": {"hist": i}},
            )
            .run()
            .unwrap();
    }
    orders
        .update_one(doc! {"_id": 11}, doc! {"$pop": {"hist": 1}})
        .run()
        .unwrap();
    orders
        .replace_one(doc! {"_id": 12}, doc! {"_id": 12, "replaced": "yes"})
        .run()
        .unwrap();
    orders
        .delete_many(doc! {"_id": {"$gte": 40, "$lt": 45}})
        .run()
        .unwrap();
    orders
        .insert_many((100..110).map(|i| doc! {"_id": i, "late": i, "bin": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![0, 255, i as u8] }}))
        .run()
        .unwrap();
    {
        let mut session = c.start_session().run().unwrap();
        session.start_transaction().run().unwrap();
        orders
            .insert_one(doc! {"_id": 1000, "txn": true})
            .session(&mut session)
            .run()
            .unwrap();
        orders
            .update_one(doc! {"_id": 13}, doc! {"$set": {"txn": true}})
            .session(&mut session)
            .run()
            .unwrap();
        session.commit_transaction().run().unwrap();
    }
    tick();
    let t1 = now();
    let at_t1 = natural(&c, "shop", "orders");
    let temp_t1 = natural(&c, "shop", "temp");
    tick();

    // Phase B: a base document deleted and inserted again, more changes;
    // `temp` dropped and created again, `gone` dropped, `src` renamed
    // into `dst`.
    orders.delete_one(doc! {"_id": 20}).run().unwrap();
    orders
        .insert_one(doc! {"_id": 20, "again": true})
        .run()
        .unwrap();
    orders
        .update_many(
            doc! {"_id": {"$lt": 5}},
            doc! {"$set": {"hist.1": "x", "deep.er.est": 1}},
        )
        .run()
        .unwrap();
    orders.delete_one(doc! {"_id": 105}).run().unwrap();
    shop.collection::<Document>("temp").drop().run().unwrap();
    shop.collection::<Document>("temp")
        .insert_many((10..12).map(|i| doc! {"_id": i, "v": "new"}))
        .run()
        .unwrap();
    shop.collection::<Document>("gone").drop().run().unwrap();
    c.database("admin")
        .run_command(doc! {"renameCollection": "shop.src", "to": "shop.dst"})
        .run()
        .unwrap();
    tick();
    let t2 = now();
    let at_t2 = natural(&c, "shop", "orders");
    let temp_t2 = natural(&c, "shop", "temp");
    // A snapshot of that state (nothing writes while it runs).
    let then = s.json(&["create", &url]);
    let then_id = then["id"].as_str().unwrap().to_owned();
    tick();

    // Phase C: after both times.
    orders
        .update_many(doc! {}, doc! {"$set": {"later": true}})
        .run()
        .unwrap();
    orders
        .delete_many(doc! {"_id": {"$gte": 100}})
        .run()
        .unwrap();
    let last = newest(&c);
    wait_stored(&s, last);
    follower.stop();

    // At T1 and T2 from the newest base before them (`latest`): the
    // server's documents, byte for byte, in its order. (For T2 that base
    // may be the snapshot taken then: nothing changed between T2 and its
    // consistent point. Naming the first base replays from it.)
    let got = out(
        &s,
        &[
            "dump",
            "latest",
            "shop.orders",
            "--at",
            &t1,
            "--format",
            "bson",
        ],
    );
    assert!(got == at_t1, "shop.orders at T1 differs from the server's");
    let got = out(
        &s,
        &[
            "dump",
            "latest",
            "shop.orders",
            "--at",
            &t2,
            "--format",
            "bson",
        ],
    );
    assert!(got == at_t2, "shop.orders at T2 differs from the server's");
    // Canonical Extended JSON: the same bytes as `backup dump` of the
    // snapshot taken at T2 writes; naming the base gives the same.
    let want = out(&s, &["dump", &then_id, "shop.orders"]);
    assert!(!want.is_empty());
    assert_eq!(
        String::from_utf8(out(&s, &["dump", "latest", "shop.orders", "--at", &t2])).unwrap(),
        String::from_utf8(want.clone()).unwrap()
    );
    assert_eq!(
        out(&s, &["dump", &base_id[..8], "shop/orders", "--at", &t2]),
        want
    );
    // A collection dropped and created again, at both times.
    let got = out(
        &s,
        &[
            "dump",
            "latest",
            "shop.temp",
            "--at",
            &t1,
            "--format",
            "bson",
        ],
    );
    assert!(got == temp_t1, "shop.temp at T1 differs");
    let got = out(
        &s,
        &[
            "dump",
            &base_id,
            "shop.temp",
            "--at",
            &t2,
            "--format",
            "bson",
        ],
    );
    assert!(got == temp_t2, "shop.temp at T2 differs");
    let got = out(
        &s,
        &[
            "dump",
            &base_id,
            "shop.orders",
            "--at",
            &t2,
            "--format",
            "bson",
        ],
    );
    assert!(
        got == at_t2,
        "shop.orders at T2 from the first base differs"
    );

    // Refusals: dropped by then, renamed into, outside the window.
    let err = s.fails(&["dump", &base_id, "shop.gone", "--at", &t2], 1);
    assert!(err.contains("dropped"), "{err}");
    assert!(!out(&s, &["dump", "latest", "shop.gone", "--at", &t1]).is_empty());
    let err = s.fails(&["dump", &base_id, "shop.dst", "--at", &t2], 2);
    assert!(
        err.contains("renamed into") && err.contains("backup restore --at"),
        "{err}"
    );
    let err = s.fails(&["dump", "latest", "shop.orders", "--at", &before_base], 2);
    assert!(err.contains("cannot dump at"), "{err}");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let err = s.fails(&["dump", "latest", "shop.orders", "--at", &future], 2);
    assert!(err.contains("future"), "{err}");
    let err = s.fails(&["dump", "latest", "shop.orders", "--at", "yesterday"], 2);
    assert!(err.contains("not a time"), "{err}");
    let err = s.fails(
        &[
            "dump",
            "latest",
            "shop.orders",
            "--at",
            &t2,
            "--format",
            "csv",
        ],
        2,
    );
    assert!(err.contains("json or bson"), "{err}");

    // Another kind: refused, saying to restore to the point.
    let f = Scratch::new();
    f.init();
    crate::util::write(&f.path("src/a.txt"), b"a");
    f.create(&f.path("src"), &[]);
    let err = f.fails(&["dump", "latest", "a.txt", "--at", &t2], 2);
    assert!(err.contains("backup restore"), "{err}");
}
