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

/// An RDB version 4 file (Redis 2.4): no checksum after the end marker,
/// expiry in seconds, a zipmap hash, a ziplist list, an intset, the
/// plain encodings and two databases.
///
/// | key | type | value |
/// |---|---|---|
/// | `s` | string | `v24` |
/// | `sec` | string | `x`, expires at 2000000000 s |
/// | `zl` | list (ziplist) | `a`, `5`, `1000` |
/// | `zm` | hash (zipmap) | `f1`=`v1`, `f2`=`val2` |
/// | `is` | set (intset) | -2, 7, 300 |
/// | `l` | list (type 1) | `a`, `b` |
/// | `st` | set (type 2) | `m`, `n` |
/// | `z` | zset (type 3) | `a`=1.5, `b`=-inf, `c`=3 |
/// | `h` | hash (type 4) | `f`=`v` |
/// | `one` (db 1) | string | `1` |
pub fn rdb_v4_redis24() -> Vec<u8> {
    hex("
        52 45 44 49 53 30 30 30 34            # REDIS0004
        fe 00                                 # SELECTDB 0
        00 01 73 03 76 32 34                  # string 's' = 'v24'
        fd 00 94 35 77                        # EXPIRETIME 2000000000 s
        00 03 73 65 63 01 78                  # string 'sec' = 'x'
        0a 02 7a 6c                           # list ziplist 'zl'
           14  14 00 00 00  0f 00 00 00  03 00
           00 01 61  03 f6  02 c0 e8 03  ff   #   'a', 5, 1000
        09 02 7a 6d                           # hash zipmap 'zm'
           13  02  02 66 31 02 00 76 31  02 66 32 04 01 76 61 6c 32 00  ff
        0b 02 69 73                           # set intset 'is'
           0e  02 00 00 00  03 00 00 00  fe ff  07 00  2c 01
        01 01 6c  02  01 61  01 62            # list 'l' = ['a', 'b']
        02 02 73 74  02  01 6d  01 6e         # set 'st' = {'m', 'n'}
        03 01 7a  03                          # zset (string scores) 'z', 3 members
           01 61  03 31 2e 35                 #   'a' 1.5
           01 62  ff                          #   'b' -inf (255)
           01 63  01 33                       #   'c' '3'
        04 01 68  01  01 66  01 76            # hash 'h' = {'f': 'v'}
        fe 01                                 # SELECTDB 1
        00 03 6f 6e 65 c0 01                  # string 'one' = int8 1
        ff                                    # EOF (no checksum before RDB 5)
    ")
}

/// An RDB version 6 file (Redis 2.6 and 2.8): checksum, expiry in
/// milliseconds, integer-encoded strings of every width, an LZF string,
/// a ziplist hash and sorted set, an intset of 64-bit members.
///
/// | key | type | value |
/// |---|---|---|
/// | `i8`, `i16`, `i32` | string | `-100`, `-30000`, `2000000000` |
/// | `ms` | string | `y`, expires at 4102444800000 ms |
/// | `lzf` | string | `abcabcabcabcabc` (LZF with a back reference) |
/// | `hz` | hash (ziplist) | `name`=`redis`, `ver`=`7` |
/// | `zz` | zset (ziplist) | `a`=1.5, `b`=2 |
/// | `big` | set (intset, 8-byte) | -1, 4294967296 |
pub fn rdb_v6_redis28() -> Vec<u8> {
    with_crc(hex("
        52 45 44 49 53 30 30 30 36            # REDIS0006
        fe 00                                 # SELECTDB 0
        00 02 69 38  c0 9c                    # 'i8' = int8 -100
        00 03 69 31 36  c1 d0 8a              # 'i16' = int16 -30000
        00 03 69 33 32  c2 00 94 35 77        # 'i32' = int32 2000000000
        fc 00 d8 c3 2c bb 03 00 00            # EXPIRETIME_MS 4102444800000
        00 02 6d 73 01 79                     # 'ms' = 'y'
        00 03 6c 7a 66                        # 'lzf' =
           c3 07 0f                           #   LZF, 7 compressed bytes, 15 bytes
           02 61 62 63                        #   literal run of 3: 'abc'
           e0 03 02                           #   back ref: len 7+3+2 = 12, offset 2+1
        0d 02 68 7a                           # hash ziplist 'hz'
           1f  1f 00 00 00  1c 00 00 00  04 00
           00 04 6e 61 6d 65  06 05 72 65 64 69 73  07 03 76 65 72  05 f8  ff
        0c 02 7a 7a                           # zset ziplist 'zz'
           18  18 00 00 00  15 00 00 00  04 00
           00 01 61  03 03 31 2e 35  05 01 62  03 f3  ff
        0b 03 62 69 67                        # set intset 'big'
           18  08 00 00 00  02 00 00 00       #   8-byte members, 2 of them
           ff ff ff ff ff ff ff ff            #   -1
           00 00 00 00 01 00 00 00            #   4294967296
        ff                                    # EOF
    "))
}

/// An RDB version 7 file (Redis 3.2): auxiliary fields, database size
/// hints, a quicklist of two ziplist nodes of which the second is LZF
/// compressed.
///
/// | key | type | value |
/// |---|---|---|
/// | `ql` | list (quicklist) | `a`, `5`, `1000`, `aaaa`, `aaaa` |
/// | `s` | string | `v32` |
pub fn rdb_v7_redis32() -> Vec<u8> {
    with_crc(hex("
        52 45 44 49 53 30 30 30 37            # REDIS0007
        fa 09 72 65 64 69 73 2d 76 65 72      # AUX 'redis-ver' =
           05 33 2e 32 2e 30                  #   '3.2.0'
        fa 0a 72 65 64 69 73 2d 62 69 74 73   # AUX 'redis-bits' = int8 64
           c0 40
        fa 05 63 74 69 6d 65                  # AUX 'ctime' = int32 1500000000
           c2 00 2f 68 59
        fa 08 75 73 65 64 2d 6d 65 6d         # AUX 'used-mem' = int32 800000
           c2 00 35 0c 00
        fe 00                                 # SELECTDB 0
        fb 02 00                              # RESIZEDB 2 keys, 0 with expiry
        0e 02 71 6c                           # list quicklist 'ql'
           02                                 #   2 nodes:
           14  14 00 00 00  0f 00 00 00  03 00
           00 01 61  03 f6  02 c0 e8 03  ff   #   ziplist 'a', 5, 1000
           c3 16 17                           #   LZF, 22 compressed bytes, 23 bytes:
           10                                 #   literal run of 17:
           17 00 00 00  10 00 00 00  02 00    #     zlbytes 23, zltail 16, zllen 2
           00 04 61 61 61 61  06              #     'aaaa', prevlen 6
           60 05                              #   back ref: len 3+2 = 5, offset 5+1 ('04 aaaa')
           00 ff                              #   literal run of 1: end
        00 01 73 03 76 33 32                  # string 's' = 'v32'
        ff                                    # EOF
    "))
}

/// A little-endian IEEE 754 double as hex tokens.
fn double(v: f64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// An RDB version 8 file (Redis 4.0): the replication auxiliary fields,
/// the sorted set with binary double scores, LRU idle time and LFU
/// frequency hints before keys.
///
/// | key | type | value |
/// |---|---|---|
/// | `z2` | zset (type 5) | `a`=-0.5, `b`=1e300 |
/// | `idle` | string | `i` (idle 100 s) |
/// | `freq` | string | `f` (LFU 7) |
/// | `ttl` | list (quicklist) | `x`, expires at 4102444800000 ms |
pub fn rdb_v8_redis40() -> Vec<u8> {
    let mut rdb = hex("
        52 45 44 49 53 30 30 30 38            # REDIS0008
        fa 09 72 65 64 69 73 2d 76 65 72      # AUX 'redis-ver' =
           06 34 2e 30 2e 31 34               #   '4.0.14'
        fa 0c 61 6f 66 2d 70 72 65 61 6d 62 6c 65   # AUX 'aof-preamble' = int8 0
           c0 00
        fa 07 72 65 70 6c 2d 69 64            # AUX 'repl-id' = 40 hex digits
           28
    ");
    rdb.extend_from_slice(b"0123456789abcdef0123456789abcdef01234567");
    rdb.extend(hex("
        fa 0b 72 65 70 6c 2d 6f 66 66 73 65 74   # AUX 'repl-offset' = int8 0
           c0 00
        fe 00                                 # SELECTDB 0
        fb 04 01                              # RESIZEDB 4 keys, 1 with expiry
        05 02 7a 32  02                       # zset (binary scores) 'z2', 2 members
           01 61                              #   'a'
    "));
    rdb.extend(double(-0.5));
    rdb.extend(hex("01 62")); // 'b'
    rdb.extend(double(1e300));
    rdb.extend(hex("
        f8 40 64                              # IDLE 100 (14-bit length)
        00 04 69 64 6c 65 01 69               # string 'idle' = 'i'
        f9 07                                 # FREQ 7
        00 04 66 72 65 71 01 66               # string 'freq' = 'f'
        fc 00 d8 c3 2c bb 03 00 00            # EXPIRETIME_MS 4102444800000
        0e 03 74 74 6c                        # list quicklist 'ttl'
           01  0e  0e 00 00 00  0a 00 00 00  01 00  00 01 78  ff   # 1 node: ziplist ['x']
        ff                                    # EOF
    "));
    with_crc(rdb)
}

/// A listpack element of the fixtures: a 7-bit unsigned integer or a
/// string of fewer than 64 bytes.
#[derive(Debug, Clone, Copy)]
pub enum Lp<'a> {
    /// `0xxxxxxx`: 0 to 127.
    U(u8),
    /// `10xxxxxx` and the bytes.
    S(&'a [u8]),
}

/// A listpack: total bytes (4, little-endian), element count (2), each
/// element's encoding followed by its length (the back length, one byte
/// below 128), and the end byte `0xff`.
pub fn listpack(elems: &[Lp<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in elems {
        let enc = match *e {
            Lp::U(n) => {
                assert!(n < 128, "7-bit integer");
                vec![n]
            }
            Lp::S(s) => {
                assert!(s.len() < 64, "6-bit string length");
                let mut v = vec![0x80 | s.len() as u8];
                v.extend_from_slice(s);
                v
            }
        };
        let n = enc.len() as u8;
        body.extend(enc);
        body.push(n);
    }
    let total = (4 + 2 + body.len() + 1) as u32;
    let mut out = total.to_le_bytes().to_vec();
    out.extend_from_slice(&u16::try_from(elems.len()).unwrap_or(0).to_le_bytes());
    out.extend(body);
    out.push(0xff);
    out
}

/// A length in the shortest of the RDB's forms.
pub fn rdb_len(n: u64) -> Vec<u8> {
    if n < 1 << 6 {
        vec![n as u8]
    } else if n < 1 << 14 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else if let Ok(n32) = u32::try_from(n) {
        let mut v = vec![0x80];
        v.extend_from_slice(&n32.to_be_bytes());
        v
    } else {
        len64(n)
    }
}

/// A plain RDB string: its length and its bytes.
pub fn rdb_string(s: &[u8]) -> Vec<u8> {
    let mut v = rdb_len(s.len() as u64);
    v.extend_from_slice(s);
    v
}

/// A stream entry id as the RDB stores it raw: milliseconds and sequence,
/// 8 bytes each, big-endian.
fn raw_id(ms: u64, seq: u64) -> Vec<u8> {
    let mut v = ms.to_be_bytes().to_vec();
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

/// An RDB version 9 file (Redis 5 and 6) with a stream (type 15): one
/// listpack node holding three entries (two that share the master
/// entry's fields, one with fields of its own), and a consumer group with
/// two pending entries owned by one consumer; then a string key.
///
/// | key | type | value |
/// |---|---|---|
/// | `st` | stream | `1700000000000-0` f=a, `1700000000000-1` f=b, `1700000000005-0` f=c g=d; group `grp` (last delivered `1700000000000-1`), consumer `alice` with both |
/// | `after` | string | `s` |
pub fn rdb_v9_stream() -> Vec<u8> {
    const MS: u64 = 1_700_000_000_000;
    let lp = listpack(&[
        // Master entry: 3 entries, 0 deleted, 1 field `f`, end.
        Lp::U(3),
        Lp::U(0),
        Lp::U(1),
        Lp::S(b"f"),
        Lp::U(0),
        // Same fields as the master entry (flag 2), ids relative to it.
        Lp::U(2),
        Lp::U(0),
        Lp::U(0),
        Lp::S(b"a"),
        Lp::U(4),
        Lp::U(2),
        Lp::U(0),
        Lp::U(1),
        Lp::S(b"b"),
        Lp::U(4),
        // Fields of its own (flag 0): 2 fields, names and values.
        Lp::U(0),
        Lp::U(5),
        Lp::U(0),
        Lp::U(2),
        Lp::S(b"f"),
        Lp::S(b"c"),
        Lp::S(b"g"),
        Lp::S(b"d"),
        Lp::U(8),
    ]);
    let mut rdb = hex("
        52 45 44 49 53 30 30 30 39            # REDIS0009
        fe 00                                 # SELECTDB 0
        0f 02 73 74                           # stream 'st'
        01                                    #   1 listpack node
    ");
    rdb.extend(rdb_string(&raw_id(MS, 0)));
    rdb.extend(rdb_string(&lp));
    rdb.extend(rdb_len(3)); // entries
    rdb.extend(rdb_len(MS + 5)); // last id
    rdb.extend(rdb_len(0));
    rdb.extend(rdb_len(1)); // consumer groups
    rdb.extend(rdb_string(b"grp"));
    rdb.extend(rdb_len(MS)); // last delivered id
    rdb.extend(rdb_len(1));
    rdb.extend(rdb_len(2)); // pending entries: id, delivery time, count
    rdb.extend(raw_id(MS, 0));
    rdb.extend_from_slice(&(MS + 1000).to_le_bytes());
    rdb.extend(rdb_len(1));
    rdb.extend(raw_id(MS, 1));
    rdb.extend_from_slice(&(MS + 2000).to_le_bytes());
    rdb.extend(rdb_len(2));
    rdb.extend(rdb_len(1)); // consumers
    rdb.extend(rdb_string(b"alice"));
    rdb.extend_from_slice(&(MS + 3000).to_le_bytes()); // seen time
    rdb.extend(rdb_len(2));
    rdb.extend(raw_id(MS, 0));
    rdb.extend(raw_id(MS, 1));
    rdb.extend(hex("00 05 61 66 74 65 72 01 73  ff")); // 'after' = 's', EOF
    with_crc(rdb)
}
