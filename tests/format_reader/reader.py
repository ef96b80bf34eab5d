#!/usr/bin/env python3
"""An independent reader of backup repositories (format versions 1 to 3).

Written from docs/REPOSITORY_FORMAT.md alone, to check that the specification
is complete enough to read a repository without the Rust code. Local
directory repositories only.

Usage:
    reader.py REPO PASSWORD list
    reader.py REPO PASSWORD restore SNAPSHOT OUTDIR
    reader.py REPO PASSWORD check [--read-data]
    reader.py REPO PASSWORD chunks SNAPSHOT PATH FILE
    reader.py REPO PASSWORD captures
    reader.py REPO PASSWORD wal-segment SYSTEM_ID SEGMENT_NAME SEGMENT_SIZE OUTFILE

`captures` lists every capture record (section 21) with its stream's kind,
range and size, each piece read and checked; PostgreSQL clusters get their
restorable WAL windows per timeline (section 21.1); MongoDB oplog slices
are decoded (section 21.2: entries inside their range, in timestamp
order) and each replica set gets its contiguous runs of slices. `wal-segment` assembles
one WAL segment of a cluster from the pieces (section 21.1) into OUTFILE.

`chunks` re-chunks the local FILE with the repository's chunker (section 16
of the specification) and compares the chunk ids with the content of the
node at PATH (slash-separated) in the snapshot.

SNAPSHOT is a full snapshot id, a unique prefix of one, or `latest`. The
password is ignored for unencrypted repositories. Output is JSON on stdout;
errors go to stderr. Exit codes: 0 success, 1 failure, 2 usage error,
3 damage found by `check`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import errno
import hashlib
import hmac
import json
import math
import os
import re
import stat
import struct
import sys
from dataclasses import dataclass

import blake3
import zstandard
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = 4
SESSION_MAGIC = bytes.fromhex("ff626b776f000401")
SESSION_INFO = b"backup repository write-only session key"
KEY_PAIR_CONTEXT = "backup repository 2026-11 write-only X25519 key pair"
NONCE_LEN = 12
TAG_LEN = 16
HEADER_ENTRY = struct.Struct("<BB32sIII")  # type, compressed, id, offset, length, raw_length
MAX_HEADER_LEN = 16 * 1024 * 1024
HEX64 = re.compile(r"^[0-9a-f]{64}$")
BLOB_TYPES = {0: "data", 1: "tree"}


class FormatError(Exception):
    """The repository is damaged or not in a format this reader understands."""


class UsageError(Exception):
    """The command line is wrong."""


# --------------------------------------------------------------------------
# Primitives


def b64(s: str, what: str) -> bytes:
    """Standard base64 with padding (RFC 4648 section 4)."""
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as e:
        raise FormatError(f"{what}: bad base64: {e}") from None


def parse_id(s: object, what: str) -> bytes:
    if not isinstance(s, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", s):
        raise FormatError(f"{what}: `{s}` is not a 64-digit hex id")
    return bytes.fromhex(s)


def zstd_decode_all(data: bytes, limit: int | None = None) -> bytes:
    """Decodes one or more concatenated zstd frames; refuses truncated ones."""
    out = bytearray()
    rest = data
    if not rest:
        raise FormatError("empty zstd stream")
    while rest:
        obj = zstandard.ZstdDecompressor().decompressobj()
        try:
            out += obj.decompress(rest)
        except zstandard.ZstdError as e:
            raise FormatError(f"zstd: {e}") from None
        if not obj.eof:
            raise FormatError("zstd: truncated frame")
        if limit is not None and len(out) > limit:
            raise FormatError(f"zstd: more than {limit} bytes")
        rest = obj.unused_data
    return bytes(out)


def aes_open(key: bytes, sealed: bytes) -> bytes | None:
    """Opens nonce(12) || ciphertext || tag(16), no associated data."""
    if len(sealed) < NONCE_LEN + TAG_LEN:
        return None
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], None)
    except InvalidTag:
        return None


# HPKE (RFC 9180), base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
# AES-256-GCM: only what opening a write-only session's key needs.
KEM_SUITE = b"KEM" + (0x0020).to_bytes(2, "big")
HPKE_SUITE = b"HPKE" + (0x0020).to_bytes(2, "big") + (0x0001).to_bytes(2, "big") + (0x0002).to_bytes(2, "big")


def labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), b"HPKE-v1" + suite + label + ikm, hashlib.sha256).digest()


def labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + labeled + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def hpke_open_base(sk: bytes, enc: bytes, info: bytes, ct: bytes) -> bytes | None:
    """SingleShot OpenBase with an empty AAD; None when it does not open."""
    private = X25519PrivateKey.from_private_bytes(sk)
    try:
        dh = private.exchange(X25519PublicKey.from_public_bytes(enc))
    except ValueError:
        return None
    pk_r = private.public_key().public_bytes_raw()
    eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", dh)
    shared = labeled_expand(KEM_SUITE, eae_prk, b"shared_secret", enc + pk_r, 32)
    psk_id_hash = labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(HPKE_SUITE, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = labeled_extract(HPKE_SUITE, shared, b"secret", b"")
    key = labeled_expand(HPKE_SUITE, secret, b"key", context, 32)
    nonce = labeled_expand(HPKE_SUITE, secret, b"base_nonce", context, 12)
    try:
        return AESGCM(key).decrypt(nonce, ct, b"")
    except InvalidTag:
        return None


def open_key_data(kf: dict, password: bytes, name: str) -> bytes | None:
    """The plaintext of an Argon2id key file's `data` (§6.3), or None when
    the password does not open it. Raises FormatError (or KeyError,
    ValueError) for a malformed file or invalid Argon2 parameters."""
    p = kf["kdf_params"]
    salt = b64(kf["salt"], f"key {name}")
    data = b64(kf["data"], f"key {name}")
    try:
        user_key = hash_secret_raw(
            secret=password,
            salt=salt,
            time_cost=int(p["iterations"]),
            memory_cost=int(p["memory_kib"]),
            parallelism=int(p["parallelism"]),
            hash_len=32,
            type=Type.ID,
            version=19,
        )
    except Exception as e:  # invalid Argon2 parameters
        raise FormatError(f"key {name}: key derivation failed: {e}") from None
    return aes_open(user_key, data)


def fs_name(v: object, what: str) -> bytes:
    """An FsName: a JSON string (UTF-8 bytes) or {"base64": "..."}."""
    if isinstance(v, str):
        try:
            return v.encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError(f"{what}: name is not valid Unicode") from None
    if isinstance(v, dict) and isinstance(v.get("base64"), str):
        return b64(v["base64"], what)
    raise FormatError(f"{what}: bad name {v!r}")


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


def time_key(s: str) -> tuple[int, int]:
    """(seconds since the epoch, nanoseconds) of an RFC 3339 time."""
    m = _RFC3339.match(s)
    if not m:
        raise FormatError(f"bad time `{s}`")
    y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
    frac = (m.group(7) or "")[:9].ljust(9, "0")
    tz = m.group(8)
    offset = 0
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        offset = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    leap = 1 if sec == 60 else 0
    base = _dt.datetime(y, mo, d, h, mi, sec - leap, tzinfo=_dt.timezone.utc)
    secs = int(base.timestamp()) + leap - offset
    return secs, int(frac)


# --------------------------------------------------------------------------
# The repository


CONFIG_FIELDS = {
    "version", "id", "created", "encryption", "compression", "chunker",
    "pack_size", "insecure_master_key", "id_hash",
}

# The keyed hash of blob ids per format version (section 5).
ID_HASH_OF_VERSION = {1: "hmac-sha256", 2: "blake3", 3: "blake3", 4: "blake3"}


def check_config_fields(cfg: dict) -> None:
    """The config rules of REPOSITORY_FORMAT.md section 5: known fields only,
    a compression level of 1-22, and the chunk-size rule."""
    unknown = set(cfg) - CONFIG_FIELDS
    if unknown:
        raise FormatError(f"config: unknown fields {sorted(unknown)}")
    comp = cfg.get("compression")
    if not isinstance(comp, dict) or comp.get("algorithm") != "zstd":
        raise FormatError("config: compression must be zstd")
    level = comp.get("level")
    if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 22:
        raise FormatError(f"config: compression level {level!r} is outside 1-22")
    ch = cfg.get("chunker")
    if not isinstance(ch, dict) or ch.get("algorithm") != "fastcdc-2020":
        raise FormatError("config: the chunker must be fastcdc-2020")
    try:
        lo, avg, hi = int(ch["min_size"]), int(ch["avg_size"]), int(ch["max_size"])
    except (KeyError, TypeError, ValueError):
        raise FormatError("config: chunker sizes missing") from None
    ok = (
        64 <= lo <= 1024 * 1024
        and 256 <= avg <= 4 * 1024 * 1024
        and 1024 <= hi <= 16 * 1024 * 1024
        and lo <= avg <= hi
        and avg & (avg - 1) == 0
        and lo % 2 == 0
        and hi % 2 == 0
    )
    if not ok:
        raise FormatError(
            f"config: chunker sizes {lo}/{avg}/{hi} break the chunk-size rule (section 5)"
        )


@dataclass(frozen=True)
class Location:
    pack: str
    offset: int
    length: int
    raw_length: int
    compressed: bool


class Repo:
    def __init__(self, root: str, password: bytes):
        self.root = root
        cfg_path = os.path.join(root, "config")
        try:
            with open(cfg_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise FormatError(f"no repository at {root} (no `config` file)") from None
        try:
            cfg = json.loads(raw)
        except ValueError as e:
            raise FormatError(f"config: not JSON: {e}") from None
        version = cfg.get("version") if isinstance(cfg, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            raise FormatError("config: no format version")
        if version > FORMAT_VERSION:
            raise FormatError(
                f"repository format version {version} is newer than this reader "
                f"supports ({FORMAT_VERSION}); use a newer reader"
            )
        if version < 1:
            raise FormatError(f"config: unknown format version {version}")
        check_config_fields(cfg)
        if version == 1 and "id_hash" in cfg:
            raise FormatError("config: a version 1 config has no id_hash")
        self.id_hash = cfg.get("id_hash", "hmac-sha256")
        if self.id_hash != ID_HASH_OF_VERSION[version]:
            raise FormatError(
                f"config: format version {version} and id_hash `{self.id_hash}` disagree"
            )
        self.config = cfg
        self.repo_id = cfg.get("id")
        encryption = cfg.get("encryption")
        insecure = cfg.get("insecure_master_key")
        if encryption not in ("aes256-gcm", "none"):
            raise FormatError(f"config: unknown encryption `{encryption}`")
        if (encryption == "none") != (insecure is not None):
            raise FormatError("config: encryption mode and stored key disagree")
        if insecure is not None:
            self.key_file = None
            self._set_master(insecure, "config")
        else:
            self._unlock(password)
        self._index: dict[tuple[str, bytes], Location] | None = None
        self.index_files: dict[str, dict] = {}

    # -- keys -------------------------------------------------------------

    def _set_master(self, mk: object, what: str) -> None:
        if not isinstance(mk, dict):
            raise FormatError(f"{what}: master key is not a JSON object")
        try:
            self.enc_key = b64(mk["encryption"], what)
            self.id_key = b64(mk["id"], what)
            self.chunker_seed = int(mk["chunker_seed"])
        except KeyError as e:
            raise FormatError(f"{what}: master key lacks {e}") from None
        if len(self.enc_key) != 32 or len(self.id_key) != 32:
            raise FormatError(f"{what}: master key parts must be 32 bytes")
        self.encrypt = bool(mk.get("encrypt", True))
        # The repository's X25519 private key (§6.2): DeriveKeyPair of the
        # BLAKE3-derived bytes.
        ikm = blake3.blake3(self.enc_key, derive_key_context=KEY_PAIR_CONTEXT).digest()
        dkp_prk = labeled_extract(KEM_SUITE, b"", b"dkp_prk", ikm)
        self.private_key = labeled_expand(KEM_SUITE, dkp_prk, b"sk", b"", 32)
        self.sessions: dict[bytes, bytes] = {}

    def _unlock(self, password: bytes) -> None:
        names = self.list_names("keys")
        if not names:
            raise FormatError("the repository has no key files")
        for name in names:
            try:
                with open(os.path.join(self.root, "keys", name), "rb") as f:
                    kf = json.loads(f.read())
                if kf.get("repository_id") != self.repo_id:
                    continue
                if "access" in kf:
                    continue  # a write-only key (§6.5) opens nothing
                if kf.get("version") != 1 or kf.get("kdf") != "argon2id":
                    print(f"warning: skipping key {name}: unsupported", file=sys.stderr)
                    continue
                plain = open_key_data(kf, password, name)
            except (OSError, ValueError, KeyError, TypeError, FormatError) as e:
                print(f"warning: skipping unreadable key {name}: {e}", file=sys.stderr)
                continue
            if plain is None:
                continue  # not this password
            try:
                mk = json.loads(plain)
            except ValueError as e:
                raise FormatError(f"key {name}: bad master key: {e}") from None
            self._set_master(mk, f"key {name}")
            self.key_file = name
            return
        raise FormatError("wrong password: no key file opens with it")

    # -- storage ----------------------------------------------------------

    def list_names(self, kind: str) -> list[str]:
        """Sorted names of the files of a kind (`keys`, `snapshots`, `index`,
        `locks`, `data`); hidden (temporary) files are ignored."""
        out = []
        base = os.path.join(self.root, kind)
        if kind == "data":
            try:
                subs = sorted(os.listdir(base))
            except FileNotFoundError:
                return []
            for sub in subs:
                d = os.path.join(base, sub)
                if len(sub) != 2 or sub.startswith(".") or not os.path.isdir(d):
                    continue
                for n in os.listdir(d):
                    if not n.startswith(".") and n.startswith(sub) and os.path.isfile(os.path.join(d, n)):
                        out.append(n)
        else:
            try:
                entries = os.listdir(base)
            except FileNotFoundError:
                return []
            for n in entries:
                if not n.startswith(".") and os.path.isfile(os.path.join(base, n)):
                    out.append(n)
        return sorted(out)

    def pack_path(self, name: str) -> str:
        return os.path.join(self.root, "data", name[:2], name)

    def open_sealed(self, sealed: bytes, what: str) -> bytes:
        if not self.encrypt:
            return sealed
        if sealed.startswith(SESSION_MAGIC) and len(sealed) >= 88 + NONCE_LEN + TAG_LEN:
            # Session-sealed by a write-only key (§6.5).
            enc, ct = sealed[8:40], sealed[40:88]
            key = self.sessions.get(enc)
            if key is None:
                key = hpke_open_base(self.private_key, enc, SESSION_INFO, ct)
                if key is not None:
                    self.sessions[enc] = key
            plain = aes_open(key, sealed[88:]) if key is not None else None
            if plain is not None:
                return plain
        plain = aes_open(self.enc_key, sealed)
        if plain is None:
            raise FormatError(f"{what}: authentication failed")
        return plain

    def load_file(self, kind: str, name: str) -> object:
        """A metadata file: SHA-256 named, sealed zstd-compressed JSON."""
        with open(os.path.join(self.root, kind, name), "rb") as f:
            data = f.read()
        what = f"{kind}/{name}"
        if hashlib.sha256(data).hexdigest() != name:
            raise FormatError(f"{what}: content does not match its name")
        try:
            return json.loads(zstd_decode_all(self.open_sealed(data, what)))
        except ValueError as e:
            raise FormatError(f"{what}: not JSON: {e}") from None

    # -- index ------------------------------------------------------------

    def load_index(self) -> dict[tuple[str, bytes], Location]:
        if self._index is not None:
            return self._index
        files: dict[str, dict] = {}
        for name in self.list_names("index"):
            if not HEX64.match(name):
                raise FormatError(f"index/{name}: not a valid index file name")
            f = self.load_file("index", name)
            if not isinstance(f, dict) or not isinstance(f.get("packs"), list):
                raise FormatError(f"index/{name}: not an index file")
            if f.get("version") != 1:
                raise FormatError(f"index/{name}: unsupported index version {f.get('version')}")
            files[name] = f
        superseded = {s.lower() for f in files.values() for s in f.get("supersedes", [])}
        index: dict[tuple[str, bytes], Location] = {}
        self.index_files = {}
        for name in sorted(files):
            if name in superseded:
                continue
            f = files[name]
            self.index_files[name] = f
            for p in f["packs"]:
                pack = parse_id(p["id"], f"index/{name}").hex()
                for b in p["blobs"]:
                    t = b["type"]
                    if t not in ("data", "tree"):
                        raise FormatError(f"index/{name}: unknown blob type {t!r}")
                    key = (t, parse_id(b["id"], f"index/{name}"))
                    if key not in index:  # the first location wins
                        index[key] = Location(
                            pack, int(b["offset"]), int(b["length"]),
                            int(b["raw_length"]), bool(b["compressed"]),
                        )
        self._index = index
        return index

    def read_blob(self, blob_type: str, blob_id: bytes) -> bytes:
        loc = self.load_index().get((blob_type, blob_id))
        if loc is None:
            raise FormatError(f"{blob_type} blob {blob_id.hex()} is not in the index")
        with open(self.pack_path(loc.pack), "rb") as f:
            f.seek(loc.offset)
            stored = f.read(loc.length)
        if len(stored) != loc.length:
            raise FormatError(f"pack {loc.pack}: blob {blob_id.hex()} lies past the end")
        return self.decode_blob(blob_id, stored, loc.compressed, loc.raw_length, loc.pack)

    def keyed_hash(self, data: bytes) -> bytes:
        """The keyed hash of the config's id_hash under the id key."""
        if self.id_hash == "blake3":
            return blake3.blake3(data, key=self.id_key).digest()
        return hmac.new(self.id_key, data, hashlib.sha256).digest()

    def blob_id(self, plain: bytes) -> bytes:
        return self.keyed_hash(plain)

    def decode_blob(self, blob_id: bytes, stored: bytes, compressed: bool,
                    raw_length: int, pack: str) -> bytes:
        what = f"pack {pack[:8]} blob {blob_id.hex()[:8]}"
        opened = self.open_sealed(stored, what)
        plain = zstd_decode_all(opened, raw_length) if compressed else opened
        if len(plain) != raw_length:
            raise FormatError(f"{what}: {len(plain)} bytes, index says {raw_length}")
        if not hmac.compare_digest(self.blob_id(plain), blob_id):
            raise FormatError(f"{what}: content does not match its id")
        return plain

    def load_tree(self, tree_id: bytes) -> list[dict]:
        data = self.read_blob("tree", tree_id)
        try:
            tree = json.loads(data)
        except ValueError as e:
            raise FormatError(f"tree {tree_id.hex()[:8]}: not JSON: {e}") from None
        if not isinstance(tree, dict) or not isinstance(tree.get("nodes"), list):
            raise FormatError(f"tree {tree_id.hex()[:8]}: no node list")
        return tree["nodes"]

    def content_ids(self, node: dict, what: str) -> list[bytes]:
        ids = [parse_id(i, what) for i in node.get("content", [])]
        for lst in node.get("content_lists", []):
            lid = parse_id(lst, what)
            data = self.read_blob("tree", lid)
            if len(data) % 32:
                raise FormatError(f"content list {lid.hex()[:8]}: length not a multiple of 32")
            ids.extend(data[i:i + 32] for i in range(0, len(data), 32))
        return ids

    # -- snapshots --------------------------------------------------------

    def snapshots(self) -> list[tuple[str, dict]]:
        out = []
        for name in self.list_names("snapshots"):
            if not HEX64.match(name):
                raise FormatError(f"snapshots/{name}: not a valid snapshot name")
            s = self.load_file("snapshots", name)
            if not isinstance(s, dict) or s.get("version") != 1:
                raise FormatError(f"snapshots/{name}: unsupported snapshot version")
            out.append((name, s))
        out.sort(key=lambda e: (time_key(e[1]["time"]), e[0]))
        return out

    def find_snapshot(self, spec: str) -> tuple[str, dict]:
        snaps = self.snapshots()
        if spec == "latest":
            if not snaps:
                raise FormatError("the repository has no snapshots")
            return snaps[-1]
        spec = spec.lower()
        found = [s for s in snaps if s[0].startswith(spec)]
        if len(found) != 1:
            raise UsageError(f"snapshot `{spec}` matches {len(found)} snapshots")
        return found[0]


# --------------------------------------------------------------------------
# Content-defined chunking (specification section 16)

M64 = (1 << 64) - 1
MASKS = [
    0, 0, 0, 0, 0, 0x0000000001804110, 0x0000000001803110, 0x0000000018035100,
    0x0000001800035300, 0x0000019000353000, 0x0000590003530000, 0x0000D90003530000,
    0x0000D90103530000, 0x0000D90303530000, 0x0000D90313530000, 0x0000D90F03530000,
    0x0000D90303537000, 0x0000D90703537000, 0x0000D90707537000, 0x0000D91707537000,
    0x0000D91747537000, 0x0000D91767537000, 0x0000D93767537000, 0x0000D93777537000,
    0x0000D93777577000, 0x0000DB3777577000,
]


def chunk_lengths(data: bytes, min_size: int, avg_size: int, max_size: int, seed: int) -> list[int]:
    """Lengths of the chunks of one content, FastCDC 2020 with normalisation 1."""
    base = [int.from_bytes(hashlib.md5(bytes([i]) * 64).digest()[:8], "big") for i in range(256)]
    gear = [g ^ seed for g in base]
    gear_ls = [((g << 1) & M64) ^ ((seed << 1) & M64) for g in base]
    bits = int(math.floor(math.log2(avg_size) + 0.5))
    mask_s, mask_l = MASKS[bits + 1], MASKS[bits - 1]
    mask_s_ls, mask_l_ls = (mask_s << 1) & M64, (mask_l << 1) & M64

    def cut(start: int) -> int:
        n = len(data) - start
        if n <= min_size:
            return n
        center = avg_size
        if n > max_size:
            n = max_size
        elif n < center:
            center = n
        i, h = min_size // 2, 0
        while i < center // 2:
            a = 2 * i
            h = ((h << 2) + gear_ls[data[start + a]]) & M64
            if h & mask_s_ls == 0:
                return a
            h = (h + gear[data[start + a + 1]]) & M64
            if h & mask_s == 0:
                return a + 1
            i += 1
        while i < n // 2:
            a = 2 * i
            h = ((h << 2) + gear_ls[data[start + a]]) & M64
            if h & mask_l_ls == 0:
                return a
            h = (h + gear[data[start + a + 1]]) & M64
            if h & mask_l == 0:
                return a + 1
            i += 1
        return n

    out, pos = [], 0
    while pos < len(data):
        n = cut(pos)
        out.append(n)
        pos += n
    return out


# --------------------------------------------------------------------------
# Commands


def cmd_list(repo: Repo) -> int:
    out = []
    for sid, s in repo.snapshots():
        out.append({
            "id": sid,
            "time": s["time"],
            "host": s.get("host"),
            "source": s.get("source"),
            "tags": s.get("tags", []),
            "tree": s["tree"],
        })
    print(json.dumps(out, indent=2))
    return 0


def safe_name(name: bytes, what: str) -> bytes:
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise FormatError(f"{what}: refusing unsafe file name {name!r}")
    return name


class Restorer:
    def __init__(self, repo: Repo):
        self.repo = repo
        self.as_root = os.geteuid() == 0
        self.stats = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0, "content_lists": 0,
                      "specials": 0, "hard_links": 0, "xattrs_refused": 0, "flags_ignored": 0}
        # Version 3 (section 11.2): the first restored path of each
        # hard-linked file, by (device, inode).
        self.links: dict[tuple[int, int], bytes] = {}

    def restore(self, tree_id: bytes, outdir: bytes) -> None:
        if os.path.lexists(outdir):
            if not os.path.isdir(outdir) or os.listdir(outdir):
                raise UsageError(f"{os.fsdecode(outdir)} is not an empty directory")
        else:
            os.makedirs(outdir)
        self.restore_tree(tree_id, outdir)

    def restore_tree(self, tree_id: bytes, dirpath: bytes) -> None:
        seen = set()
        for node in self.repo.load_tree(tree_id):
            name = safe_name(fs_name(node.get("name"), "node"), f"tree {tree_id.hex()[:8]}")
            if name in seen:
                raise FormatError(f"tree {tree_id.hex()[:8]}: duplicate name {name!r}")
            seen.add(name)
            path = os.path.join(dirpath, name)
            kind = node.get("type")
            if kind == "dir":
                if "subtree" not in node:
                    raise FormatError(f"{path!r}: directory without subtree")
                os.mkdir(path, 0o700)
                self.restore_tree(parse_id(node["subtree"], "subtree"), path)
                self.stats["dirs"] += 1
                self.set_meta(path, node, is_link=False)
            elif kind == "file" and self.link_group(node) in self.links:
                os.link(self.links[self.link_group(node)], path)
                self.stats["hard_links"] += 1
            elif kind in ("file", "stream"):
                self.restore_file(path, node)
                if self.link_group(node) is not None:
                    self.links[self.link_group(node)] = path
            elif kind in ("fifo", "chardev", "blockdev"):
                if kind == "fifo":
                    os.mkfifo(path, 0o600)
                else:
                    if "rdev" not in node:
                        raise FormatError(f"{path!r}: device node without rdev")
                    if not self.as_root:
                        continue
                    mode = stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK
                    os.mknod(path, mode | 0o600, node["rdev"])
                self.stats["specials"] += 1
                self.set_meta(path, node, is_link=False)
            elif kind == "symlink":
                if "link_target" not in node:
                    raise FormatError(f"{path!r}: symbolic link without target")
                os.symlink(fs_name(node["link_target"], "link target"), path)
                self.stats["symlinks"] += 1
                self.set_meta(path, node, is_link=True)
            else:
                raise FormatError(f"{path!r}: unknown node type {kind!r}")

    @staticmethod
    def link_group(node: dict):
        """(device, inode) of a file with more than one link, else None."""
        if node.get("links", 1) > 1 and "device" in node and "inode" in node:
            return (node["device"], node["inode"])
        return None

    def set_xattrs(self, path: bytes, node: dict) -> None:
        for x in node.get("xattrs", []):
            name = fs_name(x["name"], "xattr name")
            try:
                os.setxattr(path, name, base64.b64decode(x["value"], validate=True),
                            follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EINVAL):
                    raise
                self.stats["xattrs_refused"] += 1

    def restore_file(self, path: bytes, node: dict) -> None:
        what = os.fsdecode(path)
        size = int(node.get("size", 0))
        digest = hashlib.sha256()
        written = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            sparse = bool(node.get("sparse", False))
            with os.fdopen(fd, "wb", closefd=False) as f:
                for bid in self.repo.content_ids(node, what):
                    data = self.repo.read_blob("data", bid)
                    if sparse:
                        # Zero 4 KiB blocks of a sparse file stay holes.
                        for off in range(0, len(data), 4096):
                            block = data[off:off + 4096]
                            if block.count(0) != len(block):
                                os.pwrite(fd, block, written + off)
                    else:
                        f.write(data)
                    digest.update(data)
                    written += len(data)
            if sparse:
                os.ftruncate(fd, written)
            if written != size:
                raise FormatError(f"{what}: restored {written} bytes, node says {size}")
            if node.get("sha256") is not None and digest.hexdigest() != node["sha256"].lower():
                raise FormatError(f"{what}: SHA-256 of the content does not match the node")
            default = 0o600 if node["type"] == "stream" else 0o644
            if self.as_root and node.get("uid") is not None and node.get("gid") is not None:
                os.fchown(fd, node["uid"], node["gid"])
            os.fchmod(fd, node.get("mode", default) & 0o7777)
            self.set_xattrs(path, node)
            self.stats["flags_ignored"] += bool(node.get("flags"))
            if node.get("mtime_ns") is not None:
                atime = os.fstat(fd).st_atime_ns
                os.utime(fd, ns=(atime, node["mtime_ns"]))
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        self.stats["files"] += 1
        self.stats["bytes"] += written
        self.stats["content_lists"] += len(node.get("content_lists", []))

    def set_meta(self, path: bytes, node: dict, is_link: bool) -> None:
        if self.as_root and node.get("uid") is not None and node.get("gid") is not None:
            os.lchown(path, node["uid"], node["gid"])
        if not is_link and node.get("mode") is not None:
            os.chmod(path, node["mode"] & 0o7777)
        self.set_xattrs(path, node)
        self.stats["flags_ignored"] += bool(node.get("flags"))
        if node.get("mtime_ns") is not None:
            t = node["mtime_ns"]
            os.utime(path, ns=(t, t) if is_link else (os.lstat(path).st_atime_ns, t),
                     follow_symlinks=False)


def cmd_restore(repo: Repo, spec: str, outdir: str) -> int:
    sid, snap = repo.find_snapshot(spec)
    r = Restorer(repo)
    r.restore(parse_id(snap["tree"], "snapshot tree"), os.fsencode(outdir))
    print(json.dumps({"snapshot": sid, "target": outdir, **r.stats}, indent=2))
    return 0


def parse_header(repo: Repo, pack: str, data_tail: bytes, size: int) -> tuple[int, list[tuple]]:
    """(sealed header length, entries) from the last bytes of a pack."""
    (hlen,) = struct.unpack("<I", data_tail[-4:])
    if hlen > MAX_HEADER_LEN or hlen + 4 > size:
        raise FormatError(f"header length {hlen} is impossible for a pack of {size} bytes")
    sealed = data_tail[len(data_tail) - 4 - hlen:len(data_tail) - 4]
    plain = repo.open_sealed(sealed, "pack header")
    if len(plain) < 5 or plain[0] != 1:
        raise FormatError("unknown pack header version")
    (count,) = struct.unpack_from("<I", plain, 1)
    if len(plain) != 5 + count * HEADER_ENTRY.size:
        raise FormatError("header length does not match its entry count")
    entries = []
    for i in range(count):
        t, c, bid, off, length, raw = HEADER_ENTRY.unpack_from(plain, 5 + i * HEADER_ENTRY.size)
        if t not in BLOB_TYPES or c not in (0, 1):
            raise FormatError(f"entry {i}: unknown type {t} or flags {c}")
        entries.append((BLOB_TYPES[t], bid, off, length, raw, bool(c)))
    return hlen, entries


def cmd_check(repo: Repo, read_data: bool) -> int:
    problems: list[str] = []
    try:
        repo.load_index()
    except FormatError as e:
        print(json.dumps({"ok": False, "problems": [f"index: {e}"]}, indent=2))
        return 3
    # Every pack as listed by each live index file.
    listed: dict[str, tuple[int, list[tuple]]] = {}
    for name, f in repo.index_files.items():
        for p in f["packs"]:
            pid = p["id"].lower()
            blobs = sorted(
                (b["type"], parse_id(b["id"], "index"), int(b["offset"]), int(b["length"]),
                 int(b["raw_length"]), bool(b["compressed"]))
                for b in p["blobs"]
            )
            if pid in listed and listed[pid] != (int(p["size"]), blobs):
                problems.append(f"pack {pid}: index files disagree about its contents")
            listed[pid] = (int(p["size"]), blobs)
    on_disk = {}
    for n in repo.list_names("data"):
        on_disk[n] = os.path.getsize(repo.pack_path(n))
    blobs_checked = 0
    for pid in sorted(listed):
        size, blobs = listed[pid]
        if pid not in on_disk:
            problems.append(f"pack {pid}: listed in the index but missing")
            continue
        if on_disk[pid] != size:
            problems.append(f"pack {pid}: size {on_disk[pid]} differs from indexed size {size}")
            continue
        try:
            with open(repo.pack_path(pid), "rb") as fh:
                if read_data:
                    whole = fh.read()
                    if hashlib.sha256(whole).hexdigest() != pid:
                        raise FormatError("content does not match its name")
                    tail = whole
                else:
                    fh.seek(max(0, size - 64 * 1024))
                    tail = fh.read()
                    (hlen,) = struct.unpack("<I", tail[-4:])
                    if hlen + 4 > len(tail) and hlen + 4 <= size and hlen <= MAX_HEADER_LEN:
                        fh.seek(size - hlen - 4)
                        tail = fh.read()
            hlen, header = parse_header(repo, pid, tail, size)
        except (FormatError, struct.error) as e:
            problems.append(f"pack {pid}: {e}")
            continue
        if sorted(header) != blobs:
            hs, bs = set(header), set(blobs)
            for e in sorted(bs - hs):
                problems.append(f"pack {pid}: the index lists {e[0]} blob {e[1].hex()} that the header does not")
            for e in sorted(hs - bs):
                problems.append(f"pack {pid}: the header lists {e[0]} blob {e[1].hex()} that the index does not")
            if hs == bs:
                problems.append(f"pack {pid}: header and index list blobs a different number of times")
        # Blobs lie back to back from offset 0, followed by the header.
        pos = 0
        for e in header:
            if e[2] != pos:
                problems.append(f"pack {pid}: blob {e[1].hex()} at offset {e[2]}, expected {pos}")
                break
            pos += e[3]
        else:
            if pos + hlen + 4 != size:
                problems.append(f"pack {pid}: blobs and header do not fill the pack")
        if read_data:
            for t, bid, off, length, raw, comp in header:
                try:
                    repo.decode_blob(bid, whole[off:off + length], comp, raw, pid)
                    blobs_checked += 1
                except FormatError as e:
                    problems.append(str(e))
    unindexed = sorted(set(on_disk) - set(listed))
    # Every snapshot's trees and referenced blobs must be indexed.
    index = repo.load_index()
    snapshots = 0
    try:
        snaps = repo.snapshots()
    except FormatError as e:
        problems.append(str(e))
        snaps = []
    seen_trees: set[bytes] = set()
    for sid, s in snaps:
        snapshots += 1
        stack = [parse_id(s["tree"], f"snapshot {sid}")]
        while stack:
            tid = stack.pop()
            if tid in seen_trees:
                continue
            seen_trees.add(tid)
            try:
                nodes = repo.load_tree(tid)
                for n in nodes:
                    if n.get("subtree"):
                        stack.append(parse_id(n["subtree"], "subtree"))
                    if n.get("type") in ("file", "stream"):
                        for bid in repo.content_ids(n, "node"):
                            if ("data", bid) not in index:
                                problems.append(f"snapshot {sid[:8]}: data blob {bid.hex()} is not indexed")
            except FormatError as e:
                problems.append(f"snapshot {sid[:8]}: {e}")
    report = {
        "ok": not problems,
        "index_files": len(repo.index_files),
        "packs_indexed": len(listed),
        "packs_on_disk": len(on_disk),
        "unindexed_packs": unindexed,
        "blobs_indexed": len(index),
        "blobs_read": blobs_checked,
        "snapshots": snapshots,
        "trees": len(seen_trees),
        "problems": problems,
    }
    print(json.dumps(report, indent=2))
    return 0 if not problems else 3


def cmd_chunks(repo: Repo, spec: str, path: str, local: str) -> int:
    sid, snap = repo.find_snapshot(spec)
    tree = parse_id(snap["tree"], "snapshot tree")
    parts = [p.encode("utf-8") for p in path.strip("/").split("/")]
    node = None
    for k, part in enumerate(parts):
        nodes = {fs_name(n["name"], "node"): n for n in repo.load_tree(tree)}
        if part not in nodes:
            raise UsageError(f"`{path}` is not in snapshot {sid[:8]}")
        node = nodes[part]
        if k + 1 < len(parts):
            if node.get("type") != "dir":
                raise UsageError(f"`{path}` is not in snapshot {sid[:8]}")
            tree = parse_id(node["subtree"], "subtree")
    if node is None or node.get("type") not in ("file", "stream"):
        raise UsageError(f"`{path}` is not a file")
    stored = repo.content_ids(node, path)
    with open(local, "rb") as f:
        data = f.read()
    c = repo.config["chunker"]
    lengths = chunk_lengths(data, c["min_size"], c["avg_size"], c["max_size"], repo.chunker_seed)
    ids, pos = [], 0
    for n in lengths:
        ids.append(repo.blob_id(data[pos:pos + n]))
        pos += n
    print(json.dumps({
        "snapshot": sid,
        "path": path,
        "chunks": len(ids),
        "stored_chunks": len(stored),
        "match": ids == stored,
    }, indent=2))
    return 0


# --------------------------------------------------------------------------
# Capture records (specification sections 21 and 21.1)

CAPTURE_NAME = re.compile(r"^([0-9a-f]{16})\.([0-9A-F]+)\.([0-9A-F]+)\.([0-9a-f]{64})$")


def stream_id(repo: Repo, kind: str, identity: str) -> str:
    msg = b"capture-stream\0" + kind.encode() + b"\0" + identity.encode()
    return repo.keyed_hash(msg)[:8].hex()


def capture_names(repo: Repo) -> list[tuple[str, str, str, str]]:
    out = []
    for n in repo.list_names("captures"):
        m = CAPTURE_NAME.match(n)
        if m:  # names that do not parse are ignored
            out.append((m.group(1), m.group(2), m.group(3), n))
    return sorted(out)


def load_capture(repo: Repo, name: tuple[str, str, str, str]) -> dict:
    stream, first, last, file = name
    what = f"captures/{file}"
    with open(os.path.join(repo.root, "captures", file), "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != file.rsplit(".", 1)[1]:
        raise FormatError(f"{what}: content does not match its name")
    try:
        rec = json.loads(zstd_decode_all(repo.open_sealed(data, what)))
    except ValueError as e:
        raise FormatError(f"{what}: not JSON: {e}") from None
    if not isinstance(rec, dict) or rec.get("version") != 1:
        raise FormatError(f"captures/{file}: unsupported record version")
    if (rec.get("stream"), rec.get("first"), rec.get("last")) != (stream, first, last):
        raise FormatError(f"captures/{file}: the record describes another range than its name")
    return rec


def read_capture(repo: Repo, rec: dict, what: str) -> bytes:
    if rec.get("gap") is not None or rec.get("pack") is None:
        raise FormatError(f"{what}: a gap record has no data")
    pack = parse_id(rec["pack"], what).hex()
    blobs = rec.get("blobs", [])
    out = b""
    if blobs:
        start = min(int(b["offset"]) for b in blobs)
        end = max(int(b["offset"]) + int(b["length"]) for b in blobs)
        with open(repo.pack_path(pack), "rb") as f:
            f.seek(start)
            stored = f.read(end - start)
        if len(stored) != end - start:
            raise FormatError(f"{what}: pack {pack[:8]} is too short")
        for b in blobs:
            off = int(b["offset"]) - start
            chunk = stored[off:off + int(b["length"])]
            out += repo.decode_blob(parse_id(b["id"], what), chunk, bool(b["compressed"]),
                                    int(b["raw_length"]), pack)
    if len(out) != int(rec["size"]) or hashlib.sha256(out).hexdigest() != rec["sha256"]:
        raise FormatError(f"{what}: the bytes do not match the record's size and SHA-256")
    return out


# Sizes of BSON values that are not length-prefixed documents or strings.
BSON_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4,
              0x11: 8, 0x12: 8, 0x13: 16, 0x7F: 0, 0xFF: 0}


def bson_top_fields(doc: bytes, what: str) -> dict[str, tuple[int, bytes]]:
    """The top-level fields of one BSON document: name -> (type, raw value)."""
    if len(doc) < 5 or int.from_bytes(doc[:4], "little") != len(doc) or doc[-1] != 0:
        raise FormatError(f"{what}: not a BSON document")
    out = {}
    pos = 4
    end = len(doc) - 1
    while pos < end:
        t = doc[pos]
        pos += 1
        z = doc.index(b"\0", pos)
        name = doc[pos:z].decode("utf-8", "replace")
        pos = z + 1
        if t in BSON_FIXED:
            n = BSON_FIXED[t]
        elif t in (0x02, 0x0D, 0x0E):
            n = 4 + int.from_bytes(doc[pos:pos + 4], "little")
        elif t in (0x03, 0x04, 0x0F):
            n = int.from_bytes(doc[pos:pos + 4], "little")
        elif t == 0x05:
            n = 5 + int.from_bytes(doc[pos:pos + 4], "little")
        elif t == 0x0B:
            a = doc.index(b"\0", pos)
            n = doc.index(b"\0", a + 1) + 1 - pos
        elif t == 0x0C:
            n = 4 + int.from_bytes(doc[pos:pos + 4], "little") + 12
        else:
            raise FormatError(f"{what}: unknown BSON type {t:#x} in field {name!r}")
        if pos + n > end:
            raise FormatError(f"{what}: field {name!r} runs past the document")
        out[name] = (t, doc[pos:pos + n])
        pos += n
    return out


def oplog_entries(data: bytes, what: str) -> list[tuple[int, int, str]]:
    """The (seconds, increment, op) of each entry of an oplog slice."""
    out = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise FormatError(f"{what}: truncated entry at byte {pos}")
        n = int.from_bytes(data[pos:pos + 4], "little")
        if n < 5 or pos + n > len(data):
            raise FormatError(f"{what}: entry at byte {pos} runs past the slice")
        fields = bson_top_fields(data[pos:pos + n], f"{what} entry {len(out)}")
        ts = fields.get("ts")
        if ts is None or ts[0] != 0x11:
            raise FormatError(f"{what}: entry {len(out)} has no timestamp `ts`")
        inc = int.from_bytes(ts[1][:4], "little")
        secs = int.from_bytes(ts[1][4:], "little")
        op = fields.get("op")
        opname = op[1][4:-1].decode() if op and op[0] == 0x02 else "?"
        out.append((secs, inc, opname))
        pos += n
    return out



def wal_position(p: str) -> tuple[int, int]:
    if len(p) != 24:
        raise FormatError(f"`{p}` is not a WAL position")
    return int(p[:8], 16), int(p[8:], 16)


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and out[-1][1] >= a:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def lsn_text(x: int) -> str:
    return f"{x >> 32:X}/{x & 0xFFFFFFFF:X}"


def cmd_captures(repo: Repo) -> int:
    records = []
    wal: dict[str, dict[int, list[tuple[int, int]]]] = {}
    oplog: dict[str, list[tuple[str, str, bool]]] = {}
    for name in capture_names(repo):
        what = f"captures/{name[3]}"
        rec = load_capture(repo, name)
        entry = {
            "stream": name[0], "kind": rec["kind"], "identity": rec["identity"],
            "first": name[1], "last": name[2], "size": rec.get("size", 0),
            "gap": rec.get("gap"),
        }
        if stream_id(repo, rec["kind"], rec["identity"]) != name[0]:
            raise FormatError(f"{what}: the stream id is not the keyed hash of its kind and identity")
        if rec.get("gap") is None:
            data = read_capture(repo, rec, what)
            if rec["kind"] == "mongodb-oplog":
                entries = oplog_entries(data, what)
                prev = (0, 0)
                for secs, inc, _ in entries:
                    if not name[1] <= f"{secs:08X}{inc:08X}" < name[2] or (secs, inc) < prev:
                        raise FormatError(f"{what}: entry {secs}:{inc} is outside the slice or out of order")
                    prev = (secs, inc)
                entry["entries"] = len(entries)
                entry["ops"] = {op: sum(1 for e in entries if e[2] == op) for op in sorted({e[2] for e in entries})}
        records.append(entry)
        if rec["kind"] == "mongodb-oplog":
            oplog.setdefault(rec["identity"], []).append((name[1], name[2], rec.get("gap") is not None))
        if rec["kind"] == "postgres-wal":
            (t, a), (_, b) = wal_position(name[1]), wal_position(name[2])
            wal.setdefault(rec["identity"], {}).setdefault(t, []).append((a, b))
    windows = {
        cluster: {f"{t:08X}": [[lsn_text(a), lsn_text(b)] for a, b in merge(r)] for t, r in sorted(tl.items())}
        for cluster, tl in wal.items()
    }
    # Oplog slices chain: a run continues while each slice starts where the
    # previous one ended; a gap record ends it.
    runs: dict[str, list[list[str]]] = {}
    for rs, pieces in oplog.items():
        out: list[list[str]] = []
        broken = True
        for first, last, gap in sorted(pieces):
            if gap:
                broken = True
                continue
            if not broken and out[-1][1] == first:
                out[-1][1] = last
            else:
                out.append([first, last])
            broken = False
        runs[rs] = out
    print(json.dumps({"records": records, "postgres_windows": windows,
                      "mongodb_runs": runs}, indent=2))
    return 0


def cmd_wal_segment(repo: Repo, system_id: str, name: str, size_text: str, out_path: str) -> int:
    size = int(size_text)
    if not re.fullmatch(r"[0-9A-F]{24}", name):
        raise UsageError(f"`{name}` is not a WAL segment name")
    tli = int(name[:8], 16)
    segno = int(name[8:16], 16) * (0x100000000 // size) + int(name[16:], 16)
    begin, end = segno * size, (segno + 1) * size
    wal_stream = stream_id(repo, "postgres-wal", system_id)
    hist_stream = stream_id(repo, "postgres-timeline-history", system_id)
    names = capture_names(repo)
    history: dict[int, str] = {}
    for n in names:
        if n[0] == hist_stream:
            rec = load_capture(repo, n)
            history[int(n[1], 16)] = read_capture(repo, rec, n[3]).decode()
    # Which timeline applies where: T from its switch point, its parent below.
    spans = []
    upper, current = end, tli
    while True:
        text = history.get(current)
        lines = [l.split("\t") for l in (text or "").splitlines() if l.strip() and not l.startswith("#")]
        if current > 1 and lines:
            parent = int(lines[-1][0])
            hi, lo = lines[-1][1].split("/")
            switch = (int(hi, 16) << 32) | int(lo, 16)
            spans.append((current, max(switch, begin), upper))
            if switch <= begin:
                break
            upper, current = switch, parent
            continue
        spans.append((current, begin, upper))
        break
    data = bytearray(size)
    found = False
    for t, lo, hi in spans:
        for n in names:
            if n[0] != wal_stream:
                continue
            (pt, a), (_, b) = wal_position(n[1]), wal_position(n[2])
            if pt != t or b <= lo or a >= hi:
                continue
            rec = load_capture(repo, n)
            if rec.get("gap") is not None:
                continue
            piece = read_capture(repo, rec, n[3])
            x, y = max(lo, a), min(hi, b)
            data[x - begin:y - begin] = piece[x - a:y - a]
            found = True
    if not found:
        raise FormatError(f"no WAL of segment {name} is stored")
    with open(out_path, "wb") as f:
        f.write(data)
    print(json.dumps({"segment": name, "bytes": size}))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    root, password, cmd, *rest = argv[1:]
    try:
        if cmd == "list" and not rest:
            return cmd_list(Repo(root, os.fsencode(password)))
        if cmd == "restore" and len(rest) == 2:
            return cmd_restore(Repo(root, os.fsencode(password)), rest[0], rest[1])
        if cmd == "check" and rest in ([], ["--read-data"]):
            return cmd_check(Repo(root, os.fsencode(password)), bool(rest))
        if cmd == "captures" and not rest:
            return cmd_captures(Repo(root, os.fsencode(password)))
        if cmd == "wal-segment" and len(rest) == 4:
            return cmd_wal_segment(Repo(root, os.fsencode(password)), *rest)
        if cmd == "chunks" and len(rest) == 3:
            return cmd_chunks(Repo(root, os.fsencode(password)), *rest)
        raise UsageError(f"unknown command or arguments: {' '.join(argv[3:])}")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FormatError, OSError, KeyError, TypeError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
