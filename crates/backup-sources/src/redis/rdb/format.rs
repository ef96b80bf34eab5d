//! The constants of the format: its newest version, record opcodes and
//! value types, and the names encoded in module ids.

/// The newest RDB version this program reads (Redis 7.4).
pub const MAX_RDB_VERSION: u32 = 12;

/// Record opcodes.
pub mod opcode {
    /// Cluster slot sizes (7.4+).
    pub const SLOT_INFO: u8 = 244;
    /// A function library (7.0+).
    pub const FUNCTION2: u8 = 245;
    /// A function library in the 7.0 release-candidate format.
    pub const FUNCTION_PRE_GA: u8 = 246;
    /// Module auxiliary data.
    pub const MODULE_AUX: u8 = 247;
    /// LRU idle time of the next key.
    pub const IDLE: u8 = 248;
    /// LFU frequency of the next key.
    pub const FREQ: u8 = 249;
    /// An auxiliary field.
    pub const AUX: u8 = 250;
    /// Database size hint.
    pub const RESIZEDB: u8 = 251;
    /// Expiry of the next key in milliseconds (8 bytes, little-endian).
    pub const EXPIRETIME_MS: u8 = 252;
    /// Expiry of the next key in seconds (4 bytes, little-endian).
    pub const EXPIRETIME: u8 = 253;
    /// Database selector.
    pub const SELECTDB: u8 = 254;
    /// End of file.
    pub const EOF: u8 = 255;
}

/// Value types.
pub mod types {
    /// String (raw, integer or LZF).
    pub const STRING: u8 = 0;
    /// List as a sequence of strings (before quicklists).
    pub const LIST: u8 = 1;
    /// Set as a sequence of strings (hash table encoding).
    pub const SET: u8 = 2;
    /// Sorted set with scores as strings (before RDB 8).
    pub const ZSET: u8 = 3;
    /// Hash as field/value strings (hash table encoding).
    pub const HASH: u8 = 4;
    /// Sorted set with binary double scores (skiplist encoding).
    pub const ZSET_2: u8 = 5;
    /// Module value of the 4.0 release candidates.
    pub const MODULE_PRE_GA: u8 = 6;
    /// Module value, self-describing.
    pub const MODULE_2: u8 = 7;
    /// Hash as a zipmap (before 2.6).
    pub const HASH_ZIPMAP: u8 = 9;
    /// List as a ziplist (before 3.2).
    pub const LIST_ZIPLIST: u8 = 10;
    /// Set of integers.
    pub const SET_INTSET: u8 = 11;
    /// Sorted set as a ziplist (before 7.0).
    pub const ZSET_ZIPLIST: u8 = 12;
    /// Hash as a ziplist (before 7.0).
    pub const HASH_ZIPLIST: u8 = 13;
    /// List as a quicklist of ziplists (3.2 to 6.2).
    pub const LIST_QUICKLIST: u8 = 14;
    /// Stream (5.0 to 6.2).
    pub const STREAM_LISTPACKS: u8 = 15;
    /// Hash as a listpack (7.0+).
    pub const HASH_LISTPACK: u8 = 16;
    /// Sorted set as a listpack (7.0+).
    pub const ZSET_LISTPACK: u8 = 17;
    /// List as a quicklist of listpacks or plain nodes (7.0+).
    pub const LIST_QUICKLIST_2: u8 = 18;
    /// Stream with first id, max deleted id and entries added (7.0).
    pub const STREAM_LISTPACKS_2: u8 = 19;
    /// Set as a listpack (7.2+).
    pub const SET_LISTPACK: u8 = 20;
    /// Stream with consumer active time (7.2+).
    pub const STREAM_LISTPACKS_3: u8 = 21;
    /// Hash with field expiry, hash table encoding (7.4 release candidates).
    pub const HASH_METADATA_PRE_GA: u8 = 22;
    /// Hash with field expiry, listpack encoding (7.4 release candidates).
    pub const HASH_LISTPACK_EX_PRE_GA: u8 = 23;
    /// Hash with field expiry, hash table encoding (7.4+).
    pub const HASH_METADATA: u8 = 24;
    /// Hash with field expiry, listpack encoding (7.4+).
    pub const HASH_LISTPACK_EX: u8 = 25;

    /// Whether `t` is a value type (not an opcode).
    pub fn is_value_type(t: u8) -> bool {
        t <= 7 || (9..=25).contains(&t)
    }

    /// A short name of the Redis type a value type stores.
    pub fn kind(t: u8) -> &'static str {
        match t {
            STRING => "string",
            LIST | LIST_ZIPLIST | LIST_QUICKLIST | LIST_QUICKLIST_2 => "list",
            SET | SET_INTSET | SET_LISTPACK => "set",
            ZSET | ZSET_2 | ZSET_ZIPLIST | ZSET_LISTPACK => "zset",
            HASH
            | HASH_ZIPMAP
            | HASH_ZIPLIST
            | HASH_LISTPACK
            | HASH_METADATA_PRE_GA
            | HASH_LISTPACK_EX_PRE_GA
            | HASH_METADATA
            | HASH_LISTPACK_EX => "hash",
            STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 => "stream",
            MODULE_PRE_GA | MODULE_2 => "module",
            _ => "unknown",
        }
    }

    /// The oldest RDB version that has value type `t`.
    pub fn min_version(t: u8) -> u32 {
        match t {
            HASH_METADATA_PRE_GA | HASH_LISTPACK_EX_PRE_GA | HASH_METADATA | HASH_LISTPACK_EX => 12,
            SET_LISTPACK | STREAM_LISTPACKS_3 => 11,
            HASH_LISTPACK | ZSET_LISTPACK | LIST_QUICKLIST_2 | STREAM_LISTPACKS_2 => 10,
            STREAM_LISTPACKS => 9,
            ZSET_2 | MODULE_PRE_GA | MODULE_2 => 8,
            LIST_QUICKLIST => 7,
            _ => 1,
        }
    }
}

/// The 9-character module type name encoded in a module id (the low 10
/// bits are the encoding version).
pub fn module_type_name(id: u64) -> String {
    const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = id >> 10;
    let mut name = [0u8; 9];
    for slot in name.iter_mut().rev() {
        *slot = CHARSET[(id & 63) as usize];
        id >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}

/// The RDB version a Redis server version writes (and the newest it
/// reads), from its `redis_version` (`7.0.15`, `6.2.14`, ...).
pub fn rdb_version_of_server(version: &str) -> Option<u32> {
    let mut it = version.split('.').map(|p| p.parse::<u32>().ok());
    let major = it.next()??;
    let minor = it.next().flatten().unwrap_or(0);
    Some(match (major, minor) {
        (0..=1, _) | (2, 0..=5) => 5,
        (2, _) | (3, 0) => 6,
        (3, _) => 7,
        (4, _) => 8,
        (5 | 6, _) => 9,
        (7, 0..=1) => 10,
        (7, 2..=3) => 11,
        _ => 12,
    })
}
