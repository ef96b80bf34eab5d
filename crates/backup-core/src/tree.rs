//! Trees: the directory structure of a snapshot.
//!
//! A tree is a JSON document listing the nodes of one directory, sorted by
//! name bytes. File and stream nodes list their content as data blob ids,
//! inline for up to [`INLINE_CONTENT_LIMIT`] chunks and otherwise through
//! content-list blobs (tree blobs holding concatenated 32-byte ids), so one
//! tree stays small whatever the size of the files in it.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::sink::FileKind;

/// Most chunk ids a node lists inline; longer content uses content lists.
pub const INLINE_CONTENT_LIMIT: usize = 1024;

/// A file name as raw bytes (Unix names need not be UTF-8).
///
/// Serialized as a JSON string when the bytes are UTF-8, otherwise as
/// `{"base64": "..."}`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FsName(pub Vec<u8>);

impl FsName {
    /// From an OS string.
    pub fn from_os(s: &std::ffi::OsStr) -> Self {
        FsName(s.as_bytes().to_vec())
    }

    /// As an OS string.
    pub fn to_os(&self) -> OsString {
        OsString::from_vec(self.0.clone())
    }

    /// Lossy UTF-8 for display.
    pub fn display(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl From<&str> for FsName {
    fn from(s: &str) -> Self {
        FsName(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for FsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl fmt::Display for FsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum FsNameRepr {
    Utf8(String),
    Raw { base64: String },
}

impl Serialize for FsName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(v) => FsNameRepr::Utf8(v.to_owned()),
            Err(_) => FsNameRepr::Raw {
                base64: STANDARD.encode(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for FsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match FsNameRepr::deserialize(d)? {
            FsNameRepr::Utf8(v) => FsName(v.into_bytes()),
            FsNameRepr::Raw { base64 } => {
                FsName(STANDARD.decode(base64).map_err(serde::de::Error::custom)?)
            }
        })
    }
}

/// The type of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory with a subtree.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named stream produced by a database source (a table's rows, a
    /// schema, an RDB file); content like a file, plus a SHA-256 digest.
    Stream,
    /// A named pipe (format version 3).
    Fifo,
    /// A character device, with [`Node::rdev`] (format version 3).
    Chardev,
    /// A block device, with [`Node::rdev`] (format version 3).
    Blockdev,
}

impl NodeKind {
    /// Whether the kind is one only format version 3 records.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev
        )
    }
}

/// One extended attribute of a node: its full name (namespace included,
/// such as `user.comment`, `security.capability` or
/// `system.posix_acl_access`) and its value as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xattr {
    /// The attribute's name.
    pub name: FsName,
    /// The value, serialized as standard base64.
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
}

mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// Inode flags a node records (format version 3), as `chattr` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFlag {
    /// `i`: the file cannot be changed, renamed, linked to or removed.
    Immutable,
    /// `a`: the file can only be appended to.
    Append,
    /// `d`: dump(8) leaves the file out.
    Nodump,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Name within its directory.
    pub name: FsName,
    /// Node type.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Unix permission bits (including setuid, setgid, sticky).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Owner user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Modification time, nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
    /// Status-change time, nanoseconds since the Unix epoch (change
    /// detection only; not restored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime_ns: Option<i64>,
    /// Inode number (change detection only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// Content size in bytes (files and streams).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Content as data blob ids, in order (at most [`INLINE_CONTENT_LIMIT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Content through content-list tree blobs, in order (used instead of
    /// `content` for long files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_lists: Vec<Id>,
    /// Directory contents (a tree blob id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Symbolic link target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<FsName>,
    /// SHA-256 of a stream's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Id>,
    /// Owner's user name, when the source system had one for `uid`
    /// (format version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group name, when the source system had one for `gid` (format
    /// version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Hard link count when above 1 (format version 3). Nodes of one
    /// snapshot with equal `device` and `inode` are one file: a restore
    /// writes the first and links the others to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<u64>,
    /// The file system's device number, with `links` (format version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u64>,
    /// Device number of a character or block device node (Linux
    /// `st_rdev` encoding; format version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Extended attributes, sorted by name (format version 3). POSIX ACLs
    /// and file capabilities are the attributes `system.posix_acl_access`,
    /// `system.posix_acl_default` and `security.capability`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// The file had holes (format version 3). Its content still holds
    /// every byte (holes read as zeros, stored once by deduplication); a
    /// restore leaves zero blocks unwritten so that they become holes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
    /// Inode flags (format version 3), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<FileFlag>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Node {
    /// A node of `kind` named `name` with no metadata.
    pub fn new(name: impl Into<FsName>, kind: NodeKind) -> Self {
        Node {
            name: name.into(),
            kind,
            mode: None,
            uid: None,
            gid: None,
            mtime_ns: None,
            ctime_ns: None,
            inode: None,
            size: 0,
            content: Vec::new(),
            content_lists: Vec::new(),
            subtree: None,
            link_target: None,
            sha256: None,
            user: None,
            group: None,
            links: None,
            device: None,
            rdev: None,
            xattrs: Vec::new(),
            sparse: false,
            flags: Vec::new(),
        }
    }

    /// What of this node only format version 3 can record: empty when the
    /// node is the same in versions 1 and 2.
    pub fn version_3_features(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.kind.is_special() {
            f.push("special files");
        }
        if self.user.is_some() || self.group.is_some() {
            f.push("owner names");
        }
        if self.links.is_some() || self.device.is_some() {
            f.push("hard links");
        }
        if self.rdev.is_some() {
            f.push("device numbers");
        }
        if !self.xattrs.is_empty() {
            f.push("extended attributes and ACLs");
        }
        if self.sparse {
            f.push("sparse files");
        }
        if !self.flags.is_empty() {
            f.push("inode flags");
        }
        f
    }

    /// Removes what only format version 3 records (for a repository of an
    /// older version). Special files cannot be represented at all: the
    /// caller leaves them out.
    pub fn strip_version_3(&mut self) {
        self.user = None;
        self.group = None;
        self.links = None;
        self.device = None;
        self.rdev = None;
        self.xattrs.clear();
        self.sparse = false;
        self.flags.clear();
    }

    /// Whether the node carries content blobs.
    pub fn has_content(&self) -> bool {
        matches!(self.kind, NodeKind::File | NodeKind::Stream)
    }
}

/// The nodes of one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Nodes sorted by name bytes, names unique.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Serializes the tree (nodes must be sorted).
    pub fn encode(&self) -> Vec<u8> {
        #[allow(clippy::expect_used)]
        serde_json::to_vec(self).expect("trees always serialize")
    }

    /// Parses a tree blob.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the blob is not a tree.
    pub fn decode(data: &[u8], id: &Id) -> Result<Self> {
        serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(FileKind::Pack, format!("tree {}", id.short()), e))
    }

    /// Finds a node by name (binary search).
    pub fn find(&self, name: &FsName) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// Encodes a content list (concatenated ids).
pub fn encode_content_list(ids: &[Id]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// Decodes a content list.
///
/// # Errors
///
/// [`Error::Corrupt`] when the length is not a multiple of 32.
pub fn decode_content_list(data: &[u8], id: &Id) -> Result<Vec<Id>> {
    if data.len() % 32 != 0 {
        return Err(Error::corrupt(
            FileKind::Pack,
            format!("content list {}", id.short()),
            "length is not a multiple of 32",
        ));
    }
    Ok(data
        .chunks_exact(32)
        .map(|c| {
            let mut b = [0u8; 32];
            b.copy_from_slice(c);
            Id(b)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_3_fields_round_trip_and_are_absent_otherwise() {
        let plain = Node::new("f", NodeKind::File);
        let json = serde_json::to_string(&plain).unwrap();
        assert_eq!(json, r#"{"name":"f","type":"file"}"#);
        assert!(plain.version_3_features().is_empty());
        let mut n = Node::new("f", NodeKind::File);
        n.user = Some("www-data".to_owned());
        n.links = Some(2);
        n.device = Some(2049);
        n.inode = Some(12);
        n.sparse = true;
        n.flags = vec![FileFlag::Append, FileFlag::Immutable];
        n.xattrs = vec![Xattr {
            name: FsName::from("user.k"),
            value: vec![0, 255],
        }];
        let json = serde_json::to_string(&n).unwrap();
        assert!(
            json.contains(r#""xattrs":[{"name":"user.k","value":"AP8="}]"#)
                && json.contains(r#""flags":["append","immutable"]"#)
                && json.contains(r#""sparse":true"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Node>(&json).unwrap(), n);
        assert_eq!(n.version_3_features().len(), 5);
        n.strip_version_3();
        assert!(n.version_3_features().is_empty());
        let fifo: Node = serde_json::from_str(r#"{"name":"p","type":"fifo"}"#).unwrap();
        assert!(fifo.kind.is_special());
    }

    #[test]
    fn names_round_trip_including_non_utf8() {
        let mut tree = Tree::default();
        let mut a = Node::new("a", NodeKind::File);
        a.size = 3;
        a.content = vec![Id::hash(b"x")];
        let mut b = Node::new(FsName(vec![0x66, 0xff, 0x00]), NodeKind::Symlink);
        b.link_target = Some(FsName::from("../t"));
        tree.nodes = vec![a, b];
        let enc = tree.encode();
        let text = String::from_utf8(enc.clone()).unwrap();
        assert!(text.contains("\"base64\""));
        assert_eq!(Tree::decode(&enc, &Id::default()).unwrap(), tree);
        assert!(tree.find(&FsName::from("a")).is_some());
        assert!(tree.find(&FsName::from("zz")).is_none());
    }

    #[test]
    fn content_lists() {
        let ids = vec![Id::hash(b"1"), Id::hash(b"2")];
        let enc = encode_content_list(&ids);
        assert_eq!(decode_content_list(&enc, &Id::default()).unwrap(), ids);
        assert!(decode_content_list(&enc[1..], &Id::default()).is_err());
    }
}
