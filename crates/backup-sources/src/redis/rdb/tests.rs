//! Parser and decoder tests on hand-assembled fixtures.

use backup_testkit::redis::fixtures;

use super::decode::{decode_value, listpack, Value};
use super::lzf::lzf_decompress;
use super::*;

fn parse_all(data: &[u8], record: bool) -> RdbResult<(u32, Vec<Event>)> {
    let mut p = Parser::new(data, record)?;
    let mut out = Vec::new();
    while let Some(e) = p.next()? {
        out.push(e);
    }
    p.expect_eof()?;
    Ok((p.version(), out))
}

fn keys(events: &[Event]) -> Vec<&KeyEntry> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Key(k) => Some(k),
            _ => None,
        })
        .collect()
}

fn s(v: &str) -> Vec<u8> {
    v.as_bytes().to_vec()
}

fn decoded(k: &KeyEntry) -> Value {
    decode_value(k.rdb_type, k.value.as_deref().unwrap())
        .unwrap_or_else(|e| panic!("decoding {}: {e}", String::from_utf8_lossy(&k.key)))
}

#[test]
fn crc64_check_value() {
    // The check value of CRC-64/Jones as Redis uses it.
    assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
}

#[test]
fn ziplist_era_fixture_parses_and_decodes() {
    let rdb = fixtures::rdb_v9_ziplist_era();
    let (version, events) = parse_all(&rdb, true).unwrap();
    assert_eq!(version, 9);
    assert!(events.contains(&Event::Aux {
        key: s("redis-ver"),
        value: s("6.2.0")
    }));
    assert!(events.contains(&Event::Aux {
        key: s("redis-bits"),
        value: s("64")
    }));
    assert!(events.contains(&Event::ResizeDb {
        keys: 16,
        expires: 2
    }));
    assert!(matches!(
        events.last(),
        Some(Event::End { stored: Some(_) })
    ));
    let ks = keys(&events);
    assert_eq!(ks.len(), 17);
    let get = |name: &str| {
        *ks.iter()
            .find(|k| k.key == name.as_bytes())
            .unwrap_or_else(|| panic!("no key {name}"))
    };

    assert_eq!(decoded(get("str")), Value::String(s("hello")));
    assert_eq!(decoded(get("int")), Value::String(s("12345")));
    assert_eq!(decoded(get("lzf")), Value::String(vec![b'a'; 20]));
    assert_eq!(get("ttl").expire_ms, Some(4_102_444_800_000));
    assert_eq!(get("ttl2").expire_ms, Some(2_000_000_000_000));
    assert_eq!(get("str").expire_ms, None);
    let abc = Value::List(vec![s("a"), s("5"), s("1000")]);
    assert_eq!(decoded(get("list")), abc);
    assert_eq!(get("list").rdb_type, types::LIST_ZIPLIST);
    assert_eq!(decoded(get("ql")), abc);
    assert_eq!(
        decoded(get("zipmap")),
        Value::Hash(vec![(s("f1"), s("v1"), None), (s("f2"), s("val2"), None)])
    );
    assert_eq!(
        decoded(get("hash1")),
        Value::Hash(vec![
            (s("name"), s("redis"), None),
            (s("ver"), s("7"), None)
        ])
    );
    assert_eq!(
        decoded(get("zset")),
        Value::ZSet(vec![(s("a"), 1.5), (s("b"), 2.0)])
    );
    assert_eq!(
        decoded(get("intset")),
        Value::Set(vec![s("-2"), s("7"), s("300")])
    );
    assert_eq!(
        decoded(get("zset1")),
        Value::ZSet(vec![(s("a"), 1.5), (s("b"), f64::INFINITY)])
    );
    assert_eq!(decoded(get("zset2")), Value::ZSet(vec![(s("c"), 2.5)]));
    assert_eq!(decoded(get("list1")), Value::List(vec![s("a"), s("b")]));
    assert_eq!(decoded(get("set1")), Value::Set(vec![s("m")]));
    assert_eq!(
        decoded(get("hash2")),
        Value::Hash(vec![(s("f"), s("v"), None)])
    );
    let seven = get("7");
    assert_eq!(seven.db, 2);
    assert_eq!(decoded(seven), Value::String(s("sev")));
    assert!(ks.iter().filter(|k| k.key != b"7").all(|k| k.db == 0));
}

#[test]
fn listpack_fixtures_decode() {
    let (version, events) = parse_all(&fixtures::rdb_v10_listpack(), true).unwrap();
    assert_eq!(version, 10);
    let ks = keys(&events);
    let get = |name: &str| *ks.iter().find(|k| k.key == name.as_bytes()).unwrap();
    assert_eq!(
        decoded(get("lph")),
        Value::Hash(vec![(s("k"), s("v"), None)])
    );
    assert_eq!(decoded(get("lpz")), Value::ZSet(vec![(s("m"), 3.0)]));
    assert_eq!(
        decoded(get("ql2")),
        Value::List(vec![s("p"), s("1"), s("plain-node")])
    );
    assert_eq!(
        decoded(get("neg")),
        Value::List(vec![s("-100"), s("x"), s("42")])
    );

    let (_, events) = parse_all(&fixtures::rdb_v11_set_listpack(), true).unwrap();
    let ks = keys(&events);
    assert_eq!(ks[0].rdb_type, types::SET_LISTPACK);
    assert_eq!(decoded(ks[0]), Value::Set(vec![s("x"), s("42"), s("-100")]));
}

#[test]
fn checksum_mismatch_names_the_offset() {
    let mut rdb = fixtures::rdb_v9_ziplist_era();
    // Flip a byte inside the value of 'str' ("hello" -> "hellp").
    let pos = rdb.windows(5).position(|w| w == b"hello").unwrap() + 4;
    rdb[pos] ^= 0x1f;
    let err = parse_all(&rdb, false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(msg.contains(&format!("offset {}", rdb.len() - 8)), "{msg}");
}

#[test]
fn every_truncation_is_an_error() {
    let rdb = fixtures::rdb_v9_ziplist_era();
    for cut in 0..rdb.len() {
        let r = parse_all(&rdb[..cut], false);
        assert!(r.is_err(), "a prefix of {cut} bytes parsed");
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("offset"), "{msg}");
    }
    // Trailing garbage is refused too.
    let mut long = rdb.clone();
    long.push(0);
    assert!(parse_all(&long, false).is_err());
}

#[test]
fn corrupt_records_are_errors() {
    // Unknown record type 0x08 right after the header.
    let mut rdb = b"REDIS0009".to_vec();
    rdb.push(0x08);
    let err = parse_all(&rdb, false).unwrap_err();
    assert!(
        err.to_string().contains("unknown record type 0x08"),
        "{err}"
    );
    assert_eq!(err.offset, 9);
    // Not an RDB.
    assert!(parse_all(b"HELLO0009", false).is_err());
    // Newer than supported.
    let err = parse_all(b"REDIS0099\xff", false).unwrap_err();
    assert!(err.to_string().contains("99 is not supported"), "{err}");
    // Pre-release function format.
    let err = parse_all(b"REDIS0010\xf6", false).unwrap_err();
    assert!(err.to_string().contains("pre-release"), "{err}");
}

#[test]
fn dump_payloads_round_trip() {
    let rdb = fixtures::rdb_v9_ziplist_era();
    let (_, events) = parse_all(&rdb, true).unwrap();
    for k in keys(&events) {
        let v = k.value.as_deref().unwrap();
        let p = dump_payload(k.rdb_type, v, 9);
        let (t, raw, ver) = split_dump_payload(&p).unwrap();
        assert_eq!((t, raw, ver), (k.rdb_type, v, 9));
        let mut bad = p.clone();
        bad[1] ^= 1;
        assert!(split_dump_payload(&bad).is_err());
    }
}

#[test]
fn writer_output_parses_back() {
    let mut w = RdbWriter::new(Vec::new(), 10).unwrap();
    w.aux(b"redis-ver", b"7.0.0").unwrap();
    w.select_db(5).unwrap();
    w.resize_db(2, 1).unwrap();
    // A string value is a length-prefixed string.
    w.key(Some(1234), types::STRING, b"k", &[3, b'a', b'b', b'c'])
        .unwrap();
    let long = vec![b'z'; 20_000];
    let mut enc = Vec::new();
    let mut lw = RdbWriter::new(&mut enc, 1).unwrap();
    lw.string(&long).unwrap();
    w.key(None, types::STRING, &long, &enc[9..]).unwrap();
    let rdb = w.finish().unwrap();
    let (_, events) = parse_all(&rdb, true).unwrap();
    let ks = keys(&events);
    assert_eq!(ks.len(), 2);
    assert_eq!(ks[0].db, 5);
    assert_eq!(ks[0].expire_ms, Some(1234));
    assert_eq!(decoded(ks[0]), Value::String(s("abc")));
    assert_eq!(decoded(ks[1]), Value::String(long.clone()));
    assert_eq!(ks[1].key, long);
}

#[test]
fn lzf_and_listpack_errors() {
    assert_eq!(
        lzf_decompress(&[0x00, b'a', 0xe0, 0x0a, 0x00], 20).unwrap(),
        vec![b'a'; 20]
    );
    assert!(
        lzf_decompress(&[0x20, 0x00], 3).is_err(),
        "back reference before the start"
    );
    assert!(
        lzf_decompress(&[0x05, b'a'], 6).is_err(),
        "literal past the end"
    );
    assert!(lzf_decompress(&[0x00, b'a'], 2).is_err(), "wrong length");
    // A listpack whose back length is wrong.
    assert!(listpack(&[0x0a, 0, 0, 0, 1, 0, 0x81, b'x', 0x03, 0xff]).is_err());
    // A listpack whose total does not match.
    assert!(listpack(&[0x0b, 0, 0, 0, 1, 0, 0x81, b'x', 0x02, 0xff]).is_err());
    assert_eq!(
        listpack(&[0x0a, 0, 0, 0, 1, 0, 0x81, b'x', 0x02, 0xff]).unwrap(),
        vec![decode::Elem::Bytes(s("x"))]
    );
}

#[test]
fn module_names_and_versions() {
    // "ReJSON-RL" with encoding version 3, encoded as Redis does: 6 bits
    // per character, then 10 bits of version.
    let charset = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id: u64 = 0;
    for c in b"ReJSON-RL" {
        id = (id << 6) | charset.iter().position(|x| x == c).unwrap() as u64;
    }
    id = (id << 10) | 3;
    assert_eq!(module_type_name(id), "ReJSON-RL");
    assert_eq!(rdb_version_of_server("7.0.15"), Some(10));
    assert_eq!(rdb_version_of_server("7.2.4"), Some(11));
    assert_eq!(rdb_version_of_server("6.2.14"), Some(9));
    assert_eq!(rdb_version_of_server("7.4.1"), Some(12));
    assert_eq!(rdb_version_of_server("x"), None);
}

#[test]
fn module_values_are_walked() {
    // A module value (type 7): module id, then opcodes: uint 5, string
    // 'ab', double, end.
    let mut rdb = b"REDIS0009".to_vec();
    rdb.extend_from_slice(&[0xfe, 0x00, types::MODULE_2, 0x01, b'm']);
    let id: u64 = 0x1234_5678_9abc_d003;
    rdb.push(0x81);
    rdb.extend_from_slice(&id.to_be_bytes());
    rdb.extend_from_slice(&[0x02, 0x05, 0x05, 0x02, b'a', b'b', 0x04]);
    rdb.extend_from_slice(&1.5f64.to_le_bytes());
    rdb.extend_from_slice(&[0x00, 0xff]);
    let rdb = fixtures::with_crc(rdb);
    let (_, events) = parse_all(&rdb, true).unwrap();
    let ks = keys(&events);
    assert_eq!(ks[0].module.as_deref(), Some(module_type_name(id).as_str()));
    assert!(matches!(decoded(ks[0]), Value::Module { .. }));
}

#[test]
fn empty_values_are_recognised_in_every_encoding() {
    for (rdb, empties) in [
        (fixtures::rdb_v9_empty_keys(), 10),
        (fixtures::rdb_v10_empty_keys(), 3),
    ] {
        let (_, events) = parse_all(&rdb, true).unwrap();
        let ks = keys(&events);
        let empty: Vec<String> = ks
            .iter()
            .filter(|k| k.empty)
            .map(|k| String::from_utf8_lossy(&k.key).into_owned())
            .collect();
        assert_eq!(empty.len(), empties, "{empty:?}");
        assert!(empty.iter().all(|k| k.starts_with("e-")), "{empty:?}");
        assert!(ks
            .iter()
            .filter(|k| !k.empty)
            .all(|k| k.key.starts_with(b"keep")));
    }
    // Values of every other fixture hold elements.
    for rdb in [
        fixtures::rdb_v4_redis24(),
        fixtures::rdb_v6_redis28(),
        fixtures::rdb_v7_redis32(),
        fixtures::rdb_v8_redis40(),
        fixtures::rdb_v9_ziplist_era(),
        fixtures::rdb_v9_stream(),
        fixtures::rdb_v10_listpack(),
    ] {
        let (_, events) = parse_all(&rdb, false).unwrap();
        assert!(keys(&events).iter().all(|k| !k.empty));
    }
}

#[test]
fn bytes_after_the_checksum_are_counted() {
    let mut rdb = fixtures::rdb_v9_ziplist_era();
    rdb.extend_from_slice(b"trailing garbage");
    let mut p = Parser::new(&rdb[..], false).unwrap();
    while p.next().unwrap().is_some() {}
    assert_eq!(p.trailing().unwrap(), 16);
    let mut p = Parser::new(&rdb[..], false).unwrap();
    while p.next().unwrap().is_some() {}
    assert!(p.expect_eof().is_err());
}

#[test]
fn module_data_is_named_in_rdb_and_dump_payloads() {
    let (_, events) = parse_all(&fixtures::rdb_v9_module_aux(), false).unwrap();
    assert!(events.contains(&Event::ModuleAux {
        module: "bkpmodule".to_owned()
    }));
    let (version, events) = parse_all(&fixtures::rdb_v9_module_value(), true).unwrap();
    let m = keys(&events)
        .into_iter()
        .find(|k| k.key == b"modkey")
        .unwrap()
        .clone();
    assert_eq!(m.module.as_deref(), Some("bkpmodule"));
    // A key-mode snapshot holds DUMP payloads: the module is found there too.
    let payload = dump_payload(m.rdb_type, m.value.as_deref().unwrap(), version);
    let (t, value, _) = split_dump_payload(&payload).unwrap();
    assert_eq!(module_of_value(t, value).as_deref(), Some("bkpmodule"));
    assert_eq!(module_of_value(types::STRING, b"x"), None);
}

/// Found by the `redis_dump` fuzz target (docs/FUZZING.md): a hash with
/// field expiries whose relative expiry, added to the smallest one,
/// overflowed (a panic in a build with overflow checks, a wrong expiry
/// without).
#[test]
fn a_field_expiry_that_overflows_is_an_error() {
    let payload = b"\x18\x00\x00\x00\xff\xff\xff\xff\xff\x06\x80o\x00\x022\x00\x00\x00";
    let err = decode_value(payload[0], &payload[1..]).unwrap_err();
    assert!(matches!(err.kind, RdbErrorKind::Corrupt(_)), "{err}");
}

/// String payloads decode to the value an `MSET` sends, whatever their
/// encoding; other types and trailing bytes give `None`.
#[test]
fn string_payloads_decode_in_every_encoding() {
    let of = |raw: &[u8]| {
        super::string_of_payload(&super::dump_payload(0, raw, 10)).map(std::borrow::Cow::into_owned)
    };
    assert_eq!(of(&[3, b'a', b'b', b'c']).unwrap(), b"abc");
    assert_eq!(of(&[0xC0, 0x85]).unwrap(), b"-123");
    assert_eq!(of(&[0xC1, 0x39, 0x30]).unwrap(), b"12345");
    assert_eq!(of(&[0xC2, 0x40, 0xE2, 0x01, 0x00]).unwrap(), b"123456");
    // LZF: one literal run of three bytes.
    assert_eq!(of(&[0xC3, 4, 3, 2, b'x', b'y', b'z']).unwrap(), b"xyz");
    assert!(of(&[3, b'a', b'b', b'c', b'!']).is_none());
    let long = vec![7u8; 300];
    let mut raw = vec![0x41, 0x2c];
    raw.extend_from_slice(&long);
    assert_eq!(of(&raw).unwrap(), long);
    let mut raw = vec![0x80, 0, 0, 1, 0x2c];
    raw.extend_from_slice(&long);
    assert_eq!(of(&raw).unwrap(), long);
    assert!(of(&[0xC3, 9, 3, 2, b'x', b'y', b'z']).is_none());
    assert!(of(&[0xC4, 0]).is_none());
    assert!(super::string_of_payload(&super::dump_payload(2, &[1, 1, b'a'], 10)).is_none());
    assert!(super::string_of_payload(b"short").is_none());
}
