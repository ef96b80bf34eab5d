//! RDB files assembled by hand from the RDB format documentation, for
//! encodings the Redis of the test machines no longer writes.
//!
//! Each fixture is a list of hex tokens with comments saying what each
//! record is; the 8-byte CRC64 at the end is computed (CRC-64/Jones as
//! Redis uses it). Redis 7.0 still loads all of these encodings (it
//! converts them at load time), so a test can start a server on a fixture
//! and compare with what our parser reads.

use crc::{Crc, CRC_64_REDIS};

/// Parses whitespace-separated hex byte tokens; `#` starts a comment
/// that runs to the end of the line.
pub fn hex(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("");
        for tok in code.split_whitespace() {
            out.push(
                u8::from_str_radix(tok, 16)
                    .unwrap_or_else(|_| panic!("bad hex token `{tok}` in a fixture")),
            );
        }
    }
    out
}

/// Appends the CRC64 of everything so far (the RDB trailer).
pub fn with_crc(mut rdb: Vec<u8>) -> Vec<u8> {
    let crc = Crc::<u64>::new(&CRC_64_REDIS).checksum(&rdb);
    rdb.extend_from_slice(&crc.to_le_bytes());
    rdb
}

/// An RDB version 9 file (Redis 5 and 6) with the encodings of that era:
/// raw, integer and LZF strings, expiries in seconds and milliseconds,
/// a ziplist list, a zipmap hash, a ziplist hash, a ziplist sorted set, an
/// intset, a quicklist of ziplists, the old sorted set with string scores,
/// the binary-double sorted set, plain list/set/hash encodings, an
/// integer-encoded key name and two databases.
///
/// Contents (database 0 unless said):
///
/// | key | type | value |
/// |---|---|---|
/// | `str` | string | `hello` |
/// | `int` | string | `12345` (16-bit integer encoding) |
/// | `lzf` | string | 20 × `a` (LZF) |
/// | `ttl` | string | `x`, expires at 4102444800000 ms |
/// | `ttl2` | string | `y`, expires at 2000000000 s |
/// | `list` | list (ziplist) | `a`, `5`, `1000` |
/// | `zipmap` | hash (zipmap) | `f1`=`v1`, `f2`=`val2` |
/// | `hash1` | hash (ziplist) | `name`=`redis`, `ver`=`7` |
/// | `zset` | zset (ziplist) | `a`=1.5, `b`=2 |
/// | `intset` | set (intset) | -2, 7, 300 |
/// | `ql` | list (quicklist) | `a`, `5`, `1000` |
/// | `zset1` | zset (type 3) | `a`=1.5, `b`=+inf |
/// | `zset2` | zset (type 5) | `c`=2.5 |
/// | `list1` | list (type 1) | `a`, `b` |
/// | `set1` | set (type 2) | `m` |
/// | `hash2` | hash (type 4) | `f`=`v` |
/// | `7` (db 2) | string | `sev` |
pub fn rdb_v9_ziplist_era() -> Vec<u8> {
    with_crc(hex("
        52 45 44 49 53 30 30 30 39            # REDIS0009
        fa 09 72 65 64 69 73 2d 76 65 72      # AUX 'redis-ver' =
           05 36 2e 32 2e 30                  #   '6.2.0'
        fa 0a 72 65 64 69 73 2d 62 69 74 73   # AUX 'redis-bits' =
           c0 40                              #   int8 64
        fe 00                                 # SELECTDB 0
        fb 10 02                              # RESIZEDB 16 keys, 2 with expiry
        00 03 73 74 72 05 68 65 6c 6c 6f      # string 'str' = 'hello'
        00 03 69 6e 74 c1 39 30               # string 'int' = int16 0x3039 (12345)
        00 03 6c 7a 66                        # string 'lzf' =
           c3 05 14                           #   LZF, 5 compressed bytes, 20 bytes
           00 61                              #   literal run of 1: 'a'
           e0 0a 00                           #   back ref: len 7+10+2 = 19, offset 1
        fc 00 d8 c3 2c bb 03 00 00            # EXPIRETIME_MS 4102444800000
        00 03 74 74 6c 01 78                  # string 'ttl' = 'x'
        fd 00 94 35 77                        # EXPIRETIME 2000000000 s
        00 04 74 74 6c 32 01 79               # string 'ttl2' = 'y'
        0a 04 6c 69 73 74                     # list ziplist 'list'
           14                                 #   string of 20 bytes:
           14 00 00 00  0f 00 00 00  03 00    #   zlbytes 20, zltail 15, zllen 3
           00 01 61                           #   prevlen 0, 6-bit string 'a'
           03 f6                              #   prevlen 3, immediate 5
           02 c0 e8 03                        #   prevlen 2, int16 1000
           ff                                 #   end
        09 06 7a 69 70 6d 61 70               # hash zipmap 'zipmap'
           13                                 #   string of 19 bytes:
           02                                 #   zmlen 2
           02 66 31 02 00 76 31               #   'f1' -> 'v1' (0 free)
           02 66 32 04 01 76 61 6c 32 00      #   'f2' -> 'val2' (1 free byte)
           ff                                 #   end
        0d 05 68 61 73 68 31                  # hash ziplist 'hash1'
           1f                                 #   string of 31 bytes:
           1f 00 00 00  1c 00 00 00  04 00    #   zlbytes 31, zltail 28, zllen 4
           00 04 6e 61 6d 65                  #   'name'
           06 05 72 65 64 69 73               #   'redis'
           07 03 76 65 72                     #   'ver'
           05 f8                              #   immediate 7
           ff
        0c 04 7a 73 65 74                     # zset ziplist 'zset'
           18                                 #   string of 24 bytes:
           18 00 00 00  15 00 00 00  04 00    #   zlbytes 24, zltail 21, zllen 4
           00 01 61                           #   member 'a'
           03 03 31 2e 35                     #   score '1.5'
           05 01 62                           #   member 'b'
           03 f3                              #   score immediate 2
           ff
        0b 06 69 6e 74 73 65 74               # set intset 'intset'
           0e                                 #   string of 14 bytes:
           02 00 00 00  03 00 00 00           #   2-byte members, 3 of them
           fe ff  07 00  2c 01                #   -2, 7, 300
        0e 02 71 6c                           # list quicklist 'ql'
           01                                 #   1 node
           14                                 #   ziplist of 20 bytes (as in 'list')
           14 00 00 00  0f 00 00 00  03 00
           00 01 61  03 f6  02 c0 e8 03  ff
        03 05 7a 73 65 74 31                  # zset (string scores) 'zset1'
           02                                 #   2 members
           01 61  03 31 2e 35                 #   'a', score '1.5'
           01 62  fe                          #   'b', score +inf (254)
        05 05 7a 73 65 74 32                  # zset (binary scores) 'zset2'
           01                                 #   1 member
           01 63  00 00 00 00 00 00 04 40     #   'c', 2.5 as a little-endian double
        01 05 6c 69 73 74 31                  # list (linked) 'list1'
           02  01 61  01 62                   #   'a', 'b'
        02 04 73 65 74 31                     # set (hash table) 'set1'
           01  01 6d                          #   'm'
        04 05 68 61 73 68 32                  # hash (hash table) 'hash2'
           01  01 66  01 76                   #   'f' -> 'v'
        fe 02                                 # SELECTDB 2
        00 c0 07 03 73 65 76                  # string, key int8 7 ('7') = 'sev'
        ff                                    # EOF (CRC64 follows)
        "))
}

/// An RDB version 10 file (Redis 7.0) with the listpack encodings: a
/// listpack hash, a listpack sorted set, and a quicklist with a packed
/// (listpack) node and a plain node.
///
/// | key | type | value |
/// |---|---|---|
/// | `lph` | hash (listpack) | `k`=`v` |
/// | `lpz` | zset (listpack) | `m`=3 |
/// | `ql2` | list (quicklist 2) | `p`, `1`, `plain-node` |
/// | `neg` | list (quicklist 2) | `-100`, `x`, `42` |
pub fn rdb_v10_listpack() -> Vec<u8> {
    with_crc(hex("
        52 45 44 49 53 30 30 31 30            # REDIS0010
        fe 00                                 # SELECTDB 0
        10 03 6c 70 68                        # hash listpack 'lph'
           0d                                 #   string of 13 bytes:
           0d 00 00 00  02 00                 #   total 13, 2 elements
           81 6b 02                           #   6-bit string 'k', back length 2
           81 76 02                           #   'v'
           ff
        11 03 6c 70 7a                        # zset listpack 'lpz'
           0c                                 #   string of 12 bytes:
           0c 00 00 00  02 00                 #   total 12, 2 elements
           81 6d 02                           #   'm'
           03 01                              #   7-bit uint 3, back length 1
           ff
        12 03 71 6c 32                        # quicklist 2 'ql2'
           02                                 #   2 nodes
           02                                 #   container 2: packed (listpack)
           0c                                 #   string of 12 bytes:
           0c 00 00 00  02 00                 #   total 12, 2 elements
           81 70 02                           #   'p'
           01 01                              #   uint 1
           ff
           01                                 #   container 1: plain
           0a 70 6c 61 69 6e 2d 6e 6f 64 65   #   'plain-node'
        12 03 6e 65 67                        # quicklist 2 'neg'
           01                                 #   1 node
           02                                 #   packed
           0f                                 #   string of 15 bytes:
           0f 00 00 00  03 00                 #   total 15, 3 elements
           df 9c 02                           #   13-bit int: 0x1f9c - 8192 = -100
           81 78 02                           #   'x'
           2a 01                              #   uint 42
           ff
        ff                                    # EOF
        "))
}

/// A set as a listpack (RDB type 20, Redis 7.2, RDB version 11) holding
/// `x`, `42` and `-100`; for parser tests only (Redis 7.0 cannot load
/// RDB 11).
pub fn rdb_v11_set_listpack() -> Vec<u8> {
    with_crc(hex("
        52 45 44 49 53 30 30 31 31            # REDIS0011
        fe 00                                 # SELECTDB 0
        14 02 73 6c                           # set listpack 'sl'
           0f                                 #   string of 15 bytes
           0f 00 00 00  03 00
           81 78 02                           #   'x'
           2a 01                              #   42
           df 9c 02                           #   -100
           ff
        ff
        "))
}

/// The 64-bit id of a module type: the 9-character name in a 64-symbol
/// alphabet, 6 bits per character, then 10 bits of encoding version.
pub fn module_id(name: &str, encver: u64) -> u64 {
    const CHARSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_eq!(name.len(), 9, "module type names have 9 characters");
    let mut id = 0u64;
    for c in name.bytes() {
        let v = CHARSET
            .iter()
            .position(|&x| x == c)
            .unwrap_or_else(|| panic!("`{}` is not allowed in a module name", c as char));
        id = (id << 6) | v as u64;
    }
    (id << 10) | encver
}

/// A length in its 9-byte form (`0x81` and 8 bytes big-endian), as Redis
/// writes module ids.
pub fn len64(n: u64) -> Vec<u8> {
    let mut v = vec![0x81];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

/// Self-describing module data (RDB types 7 and module aux records): an
/// unsigned integer and a string, then the end opcode.
fn module_body(n: u8, s: &[u8]) -> Vec<u8> {
    let mut v = vec![0x02, n, 0x05, u8::try_from(s.len()).unwrap_or(0)];
    v.extend_from_slice(s);
    v.push(0x00);
    v
}

/// An RDB version 9 file with auxiliary data of module type `bkpmodule`
/// (a `MODULE_AUX` record, written after the keys as Redis does for
/// modules that ask for it) and one string key `plain` = `v`. Redis
/// refuses to load it without the module.
pub fn rdb_v9_module_aux() -> Vec<u8> {
    let mut rdb = hex("
        52 45 44 49 53 30 30 30 39            # REDIS0009
        fa 09 72 65 64 69 73 2d 76 65 72      # AUX 'redis-ver' =
           05 36 2e 32 2e 30                  #   '6.2.0'
        fe 00                                 # SELECTDB 0
        00 05 70 6c 61 69 6e 01 76            # string 'plain' = 'v'
        f7                                    # MODULE_AUX
    ");
    rdb.extend(len64(module_id("bkpmodule", 1)));
    rdb.extend(hex("02 02")); // `when` opcode (unsigned), when = after the keys
    rdb.extend(module_body(7, b"state"));
    rdb.push(0xff);
    with_crc(rdb)
}

/// An RDB version 9 file with a module value (type 7, module type
/// `bkpmodule`) under the key `modkey`, and string keys `a` = `1` and
/// `b` = `2`.
pub fn rdb_v9_module_value() -> Vec<u8> {
    let mut rdb = hex("
        52 45 44 49 53 30 30 30 39            # REDIS0009
        fe 00                                 # SELECTDB 0
        00 01 61 01 31                        # string 'a' = '1'
        07 06 6d 6f 64 6b 65 79               # module value 'modkey'
    ");
    rdb.extend(len64(module_id("bkpmodule", 1)));
    rdb.extend(module_body(3, b"value"));
    rdb.extend(hex("00 01 62 01 32")); // string 'b' = '2'
    rdb.push(0xff);
    with_crc(rdb)
}

/// An RDB version 9 file with empty keys of every encoding Redis 6 could
/// leave behind (Redis 7 skips them at load and refuses them in
/// `RESTORE`), between two keys that hold values. (An empty zipmap or
/// intset is not among them: Redis 7 calls the whole file corrupt.)
///
/// | key | type | value |
/// |---|---|---|
/// | `keep1` | string | `v` |
/// | `e-list` | list (type 1) | empty |
/// | `e-set` | set (type 2) | empty |
/// | `e-zset` | zset (type 3) | empty |
/// | `e-hash` | hash (type 4) | empty |
/// | `e-zset2` | zset (type 5) | empty |
/// | `e-zl` | list (ziplist) | empty |
/// | `e-zzl` | zset (ziplist) | empty |
/// | `e-hzl` | hash (ziplist) | empty |
/// | `e-ql` | list (quicklist) | one empty ziplist node |
/// | `e-ql0` | list (quicklist) | no node |
/// | `keep2` | list (type 1) | `x` |
pub fn rdb_v9_empty_keys() -> Vec<u8> {
    with_crc(hex("
        52 45 44 49 53 30 30 30 39            # REDIS0009
        fe 00                                 # SELECTDB 0
        00 05 6b 65 65 70 31 01 76            # string 'keep1' = 'v'
        01 06 65 2d 6c 69 73 74  00           # list 'e-list', 0 elements
        02 05 65 2d 73 65 74  00              # set 'e-set', 0 members
        03 06 65 2d 7a 73 65 74  00           # zset 'e-zset', 0 members
        04 06 65 2d 68 61 73 68  00           # hash 'e-hash', 0 fields
        05 07 65 2d 7a 73 65 74 32  00        # zset (binary scores) 'e-zset2', 0
        0a 04 65 2d 7a 6c                     # list ziplist 'e-zl'
           0b                                 #   string of 11 bytes:
           0b 00 00 00  0a 00 00 00  00 00 ff #   zlbytes 11, zltail 10, zllen 0, end
        0c 05 65 2d 7a 7a 6c                  # zset ziplist 'e-zzl'
           0b  0b 00 00 00  0a 00 00 00  00 00 ff
        0d 05 65 2d 68 7a 6c                  # hash ziplist 'e-hzl'
           0b  0b 00 00 00  0a 00 00 00  00 00 ff
        0e 04 65 2d 71 6c                     # list quicklist 'e-ql'
           01                                 #   1 node:
           0b  0b 00 00 00  0a 00 00 00  00 00 ff   # an empty ziplist
        0e 05 65 2d 71 6c 30  00              # list quicklist 'e-ql0', 0 nodes
        01 05 6b 65 65 70 32  01  01 78       # list 'keep2' = ['x']
        ff                                    # EOF
        "))
}

/// An RDB version 10 file (Redis 7.0) with empty listpack values: a hash,
/// a sorted set, and a quicklist whose only node is an empty listpack;
/// plus `keep` = `v`.
pub fn rdb_v10_empty_keys() -> Vec<u8> {
    with_crc(hex("
        52 45 44 49 53 30 30 31 30            # REDIS0010
        fe 00                                 # SELECTDB 0
        10 04 65 2d 6c 68                     # hash listpack 'e-lh'
           07  07 00 00 00  00 00 ff          #   total 7, 0 elements, end
        11 04 65 2d 6c 7a                     # zset listpack 'e-lz'
           07  07 00 00 00  00 00 ff
        12 05 65 2d 71 6c 32                  # quicklist 2 'e-ql2'
           01  02                             #   1 node, packed:
           07  07 00 00 00  00 00 ff          #   an empty listpack
        00 04 6b 65 65 70 01 76               # string 'keep' = 'v'
        ff
        "))
}

/// An RDB version 10 file whose third key holds a set as a listpack
/// (type 20, which only Redis 7.2 and newer read): `a` = `1`, `b` = `2`,
/// `sl` = {`x`}, `c` = `3`. A Redis 7.0 target refuses `sl`.
pub fn rdb_v10_with_a_newer_encoding() -> Vec<u8> {
    with_crc(hex("
        52 45 44 49 53 30 30 31 30            # REDIS0010
        fe 00                                 # SELECTDB 0
        00 01 61 01 31                        # string 'a' = '1'
        00 01 62 01 32                        # string 'b' = '2'
        14 02 73 6c                           # set listpack 'sl'
           0a  0a 00 00 00  01 00  81 78 02  ff   # total 10, 1 element: 'x'
        00 01 63 01 33                        # string 'c' = '3'
        ff
        "))
}
