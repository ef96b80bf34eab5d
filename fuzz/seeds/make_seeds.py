#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/).

Every seed is generated here: RDB files and DUMP payloads by a throwaway
redis-server fed by this script (when redis-server is installed; hand
assembled ones otherwise too), pg_dump scripts of a throwaway PostgreSQL
server, the rest assembled from the formats' descriptions. Run from anywhere: python3 fuzz/seeds/make_seeds.py
"""
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(os.path.dirname(HERE), "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- RESP
def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


COMMANDS = [
    ("SET", "k1", "v1"), ("SET", "n", "12345"), ("EXPIRE", "k1", "100"),
    ("RPUSH", "l", "a", "b", "c"), ("SADD", "s", "1", "2", "x"),
    ("HSET", "h", "f1", "v1", "f2", "v2"), ("ZADD", "z", "1.5", "m1", "2", "m2"),
    ("XADD", "st", "*", "f", "v"), ("XGROUP", "CREATE", "st", "g", "0"),
    ("SELECT", "1"), ("PING",), ("MULTI",), ("EXEC",), ("DEL", "k1", "l"),
    ("PEXPIREAT", "h", "99999999999"), ("SET", "big", "x" * 300),
]


# ---------------------------------------------------------------- Redis
def crc64_jones(data, crc=0):
    poly = 0x95AC9329AC4BC9B5
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc


def rdb_len(n):
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    return b"\x80" + struct.pack(">I", n)


def rdb_str(s):
    s = s if isinstance(s, bytes) else s.encode()
    return rdb_len(len(s)) + s


def listpack(entries):
    body = b""
    for e in entries:
        if isinstance(e, int) and 0 <= e < 128:
            enc = bytes([e])
        elif isinstance(e, int):
            enc = b"\xf4" + struct.pack("<q", e)
        else:
            e = e.encode()
            enc = bytes([0x80 | len(e)]) + e
        n = len(enc)
        back = bytes([n]) if n < 128 else bytes([(n >> 7) & 0x7F | 0x80, n & 0x7F])[::-1]
        body += enc + back
    total = 6 + len(body) + 1
    return struct.pack("<IH", total, len(entries)) + body + b"\xff"


def intset(values):
    return struct.pack("<II", 2, len(values)) + b"".join(struct.pack("<h", v) for v in values)


def lzf_literal(data):
    out = b""
    for i in range(0, len(data), 32):
        chunk = data[i:i + 32]
        out += bytes([len(chunk) - 1]) + chunk
    return out


def hand_rdb(version):
    body = b"REDIS%04d" % version
    body += b"\xfa" + rdb_str("redis-ver") + rdb_str("7.0.15")
    body += b"\xfa" + rdb_str("redis-bits") + b"\xc0\x40"
    body += b"\xfe\x00" + b"\xfb\x05\x01"
    body += b"\x00" + rdb_str("str") + rdb_str("hello")
    body += b"\x00" + rdb_str("int8") + b"\xc0\x7b"
    body += b"\x00" + rdb_str("int32") + b"\xc2" + struct.pack("<i", 1234567)
    plain = b"abc" * 20
    comp = lzf_literal(b"abc") + bytes([(7 << 5) | 0, 60 - 3 - 9, 2])  # back reference
    body += b"\x00" + rdb_str("lzf") + b"\xc3" + rdb_len(len(comp)) + rdb_len(len(plain)) + comp
    body += b"\xfc" + struct.pack("<q", 1893456000000)
    body += b"\x00" + rdb_str("expiring") + rdb_str("v")
    body += b"\x12" + rdb_str("list") + rdb_len(1) + rdb_len(2) + rdb_str(listpack(["a", "b", 7]))
    body += b"\x0b" + rdb_str("intset") + rdb_str(intset([1, 2, 3]))
    body += b"\x14" + rdb_str("setlp") + rdb_str(listpack(["x", "y"]))
    body += b"\x10" + rdb_str("hashlp") + rdb_str(listpack(["f", "v", "g", 5]))
    body += b"\x11" + rdb_str("zsetlp") + rdb_str(listpack(["m", 1, "n", 2]))
    body += b"\x02" + rdb_str("set") + rdb_len(2) + rdb_str("p") + rdb_str("q")
    body += b"\x04" + rdb_str("hash") + rdb_len(1) + rdb_str("f") + rdb_str("v")
    body += b"\x05" + rdb_str("zset2") + rdb_len(1) + rdb_str("m") + struct.pack("<d", 1.5)
    body += b"\xff"
    return body + struct.pack("<Q", crc64_jones(body))


class Redis:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def call(self, *args):
        self.s.sendall(resp(*args))
        return self.reply()

    def reply(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise RuntimeError(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise RuntimeError(line)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def redis_seeds():
    if not shutil.which("redis-server"):
        print("redis-server not installed: only hand-assembled RDB seeds")
        return
    tmp = tempfile.mkdtemp()
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                r = Redis(port)
                r.call("PING")
                break
            except OSError:
                time.sleep(0.05)
        r.call("SET", "str", "hello")
        r.call("SET", "num", "123456789")
        r.call("SET", "compressible", "abcdefgh" * 40)
        r.call("SET", "exp", "v", "PX", "100000000")
        r.call("RPUSH", "list", *["item%d" % i for i in range(5)])
        r.call("RPUSH", "biglist", *[("v%d" % i) * 10 for i in range(200)])
        r.call("SADD", "intset", "1", "2", "300", "70000")
        r.call("SADD", "set", "a", "b", "c")
        r.call("SADD", "bigset", *["m%d" % i for i in range(200)])
        r.call("HSET", "hash", "f1", "v1", "f2", "22")
        r.call("HSET", "bighash", *[x for i in range(200) for x in ("f%d" % i, "v" * 80)])
        r.call("ZADD", "zset", "1", "a", "2.5", "b")
        r.call("ZADD", "bigzset", *[x for i in range(200) for x in (str(i * 1.5), "m%d" % i)])
        r.call("XADD", "stream", "1-1", "f", "v")
        r.call("XADD", "stream", "2-1", "f", "w", "g", "x")
        r.call("XGROUP", "CREATE", "stream", "grp", "0")
        r.call("XREADGROUP", "GROUP", "grp", "c1", "COUNT", "1", "STREAMS", "stream", ">")
        r.call("SELECT", "3")
        r.call("SET", "db3", "x")
        r.call("SELECT", "0")
        for k in r.call("KEYS", "*"):
            d = r.call("DUMP", k)
            put("redis_dump", "dump-" + k.decode(), d)
        r.call("SAVE")
        with open(os.path.join(tmp, "dump.rdb"), "rb") as f:
            rdb = f.read()
        put("redis_rdb", "server-full.rdb", rdb)
        r.call("FLUSHALL")
        r.call("SET", "only", "one")
        r.call("SAVE")
        with open(os.path.join(tmp, "dump.rdb"), "rb") as f:
            put("redis_rdb", "server-small.rdb", f.read())
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def frame(end, t, cmd):
    return struct.pack("<QqI", end, t, len(cmd)) + cmd


# ---------------------------------------------------------------- BSON
def cstr(s):
    return s.encode() + b"\x00"


def bson_doc(items):
    body = b""
    for k, v in items:
        if isinstance(v, bool):
            body += b"\x08" + cstr(k) + (b"\x01" if v else b"\x00")
        elif isinstance(v, int):
            body += b"\x10" + cstr(k) + struct.pack("<i", v)
        elif isinstance(v, float):
            body += b"\x01" + cstr(k) + struct.pack("<d", v)
        elif isinstance(v, str):
            e = v.encode()
            body += b"\x02" + cstr(k) + struct.pack("<i", len(e) + 1) + e + b"\x00"
        elif isinstance(v, tuple) and v[0] == "ts":
            body += b"\x11" + cstr(k) + struct.pack("<II", v[2], v[1])
        elif isinstance(v, tuple) and v[0] == "i64":
            body += b"\x12" + cstr(k) + struct.pack("<q", v[1])
        elif isinstance(v, tuple) and v[0] == "bin":
            body += b"\x05" + cstr(k) + struct.pack("<i", len(v[1])) + b"\x04" + v[1]
        elif isinstance(v, list):
            body += b"\x04" + cstr(k) + bson_doc([(str(i), x) for i, x in enumerate(v)])
        elif isinstance(v, dict):
            body += b"\x03" + cstr(k) + bson_doc(list(v.items()))
        elif v is None:
            body += b"\x0a" + cstr(k)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def oplog(op, ns, o, o2=None, t=1, extra=()):
    items = [("ts", ("ts", t, 1700000000)), ("t", ("i64", 1)), ("op", op), ("ns", ns), ("o", o)]
    if o2 is not None:
        items.append(("o2", o2))
    items.extend(extra)
    return bson_doc(items)


def mongo_seeds():
    entries = [
        oplog("i", "app.users", {"_id": 1, "name": "ann", "tags": ["a", "b"]}),
        oplog("u", "app.users", {"$v": 2, "diff": {"u": {"name": "bob"}, "d": {"x": False},
                                                    "sa": {"a": True, "l": 1, "u0": "z"}}}, {"_id": 1}, 2),
        oplog("u", "app.users", {"$set": {"age": 3}, "$unset": {"old": True}}, {"_id": 1}, 3),
        oplog("u", "app.users", {"diff": {"updatedFields": {"a.b": 1}, "removedFields": ["c"],
                                          "truncatedArrays": []}}, {"_id": 1}, 4),
        oplog("u", "app.users", {"_id": 1, "whole": "replacement"}, {"_id": 1}, 5),
        oplog("d", "app.users", {"_id": 1}, None, 6),
        oplog("n", "", {"msg": "periodic noop"}, None, 7),
        oplog("c", "app.$cmd", {"create": "logs", "capped": True, "size": 4096}, None, 8),
        oplog("c", "app.$cmd", {"createIndexes": "users", "v": 2, "key": {"name": 1}, "name": "name_1"}, None, 9),
        oplog("c", "app.$cmd", {"createIndexes": "users", "indexes": [{"key": {"a": 1}, "name": "a_1"}]}, None, 10),
        oplog("c", "app.$cmd", {"dropIndexes": "users", "index": "name_1"}, None, 11),
        oplog("c", "app.$cmd", {"renameCollection": "app.logs", "to": "app.logs2", "dropTarget": False}, None, 12),
        oplog("c", "app.$cmd", {"collMod": "users", "validator": {"a": {"$type": "int"}}}, None, 13),
        oplog("c", "app.$cmd", {"create": "v", "viewOn": "users", "pipeline": [{"$match": {"a": 1}}]}, None, 14),
        oplog("c", "admin.$cmd", {"applyOps": [
            {"op": "i", "ns": "app.users", "o": {"_id": 2}},
            {"op": "d", "ns": "app.users", "o": {"_id": 3}}]}, None, 15,
            [("lsid", {"id": ("bin", b"0123456789abcdef")}), ("txnNumber", ("i64", 1))]),
        oplog("c", "app.$cmd", {"drop": "logs2"}, None, 16),
        oplog("c", "app.$cmd", {"dropDatabase": 1}, None, 17),
    ]
    put("mongo_oplog", "piece-all", b"".join(entries))
    for i, e in enumerate(entries):
        put("mongo_oplog", "entry-%02d" % i, e)


# ---------------------------------------------------------------- PostgreSQL
def tar_header(name, size=0, kind=b"0", link=b""):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000600\x00"
    h[108:116] = b"0000764\x00"
    h[116:124] = b"0000764\x00"
    h[124:136] = b"%011o\x00" % size
    h[136:148] = b"%011o\x00" % 1700000000
    h[148:156] = b" " * 8
    h[156:157] = kind
    h[157:157 + len(link)] = link
    h[257:263] = b"ustar\x00"
    h[263:265] = b"00"
    s = sum(h)
    h[148:156] = b"%06o\x00 " % s
    return bytes(h)


def member(name, data=b"", kind=b"0", link=b""):
    pad = (512 - len(data) % 512) % 512
    return tar_header(name, len(data), kind, link) + data + b"\x00" * pad


def pg_seeds():
    stream = (member(b"PG_VERSION", b"15\n") + member(b"global/", kind=b"5")
              + member(b"global/pg_control", b"\x01" * 700)
              + member(b"pg_tblspc/16400", kind=b"2", link=b"/srv/ts")
              + member(b"base/1/1259", b"\x00" * 8192) + b"\x00" * 1024)
    put("pg_tar", "base", stream)
    big = bytearray(tar_header(b"big", 0))
    big[124:136] = b"\x80" + b"\x00" * 7 + b"\x00\x02\x00\x00"  # base-256 size
    big[148:156] = b" " * 8
    big[148:156] = b"%06o\x00 " % sum(big)
    put("pg_tar", "base256", bytes(big) + b"\x00" * 1024)
    files = [
        {"Path": "PG_VERSION", "Size": 3, "Last-Modified": "2024-01-01 00:00:00 GMT",
         "Checksum-Algorithm": "CRC32C", "Checksum": "c0ffee00"},
        {"Encoded-Path": "626173652f", "Size": 8192, "Last-Modified": "2024-01-01 00:00:00 GMT",
         "Checksum-Algorithm": "NONE"},
    ]
    text = '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n'
    text += ",\n".join(json.dumps(f) for f in files) + " ],\n"
    text += '"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138" }\n],\n'
    # The target appends a matching Manifest-Checksum member; a whole
    # manifest with its own checksum is a seed too.
    put("pg_manifest", "prefix", text)
    whole = text + '"Manifest-Checksum": "%s"}\n' % hashlib.sha256(text.encode()).hexdigest()
    put("pg_manifest", "whole", whole)


def pg_wal_seeds():
    # The first line is read as the segment size (`SHOW wal_segment_size`).
    put("pg_wal", "history",
        "16MB\n1\t0/3000000\tno recovery target specified\n\n"
        "2\t0/5000A0\tbefore 2026-11-26 10:00:00+00\n")
    put("pg_wal", "names",
        "1GB\n000000010000000000000002 000000030000000100000000 "
        "00000002.history 0000000200000001000000FF 16/B374D848 "
        "000000020000000123456789 8192 64kB\n")


PG_OBJECTS = r'''
CREATE SCHEMA sales;
CREATE TYPE sales.mood AS ENUM ('ok', 'sad', 'it''s');
CREATE DOMAIN sales.pos AS integer CHECK (VALUE > 0);
CREATE SEQUENCE sales.seq START 42;
CREATE TABLE sales.orders (
  id bigserial PRIMARY KEY, note text, raw bytea, tags text[], doc jsonb,
  at timestamptz DEFAULT now(), m sales.mood, n numeric(20,5), r real,
  q sales.pos, span tsrange, ip inet, bits bit varying(12), u uuid);
INSERT INTO sales.orders (note, raw, tags, doc, m, n, r, q, span, ip, bits, u) VALUES
 (E'tab\there\nnewline \\ backslash', '\x00ff10', '{a,"b c",NULL}',
  '{"k": [1, 2, {"x": "\u00e9"}]}', 'it''s', 12345.678, 'NaN', 3,
  '[2026-01-01,2026-02-01)', '10.0.0.1/8', B'101', '6f1c2b9e-0000-4000-8000-000000000001'),
 (NULL, NULL, '{}', 'null', NULL, -0.00001, '-Infinity', 1, 'empty', '::1', B'', NULL),
 ('ünïcödé 日本語 🎉', '\x', NULL, '"s"', 'ok', 0, 0, 2, NULL, NULL, NULL, NULL);
CREATE TABLE sales.items (order_id bigint REFERENCES sales.orders(id) ON DELETE CASCADE,
  line int, CONSTRAINT items_pk PRIMARY KEY (order_id, line)) ;
CREATE INDEX orders_note ON sales.orders (lower(note)) WHERE note IS NOT NULL;
CREATE VIEW sales.v AS SELECT id, note FROM sales.orders WHERE note <> '';
CREATE MATERIALIZED VIEW sales.mv AS SELECT count(*) AS c FROM sales.orders;
CREATE FUNCTION sales.f(a int) RETURNS int LANGUAGE plpgsql AS $body$
BEGIN
  -- a comment with a ; and a 'quote'
  RETURN a + 1; /* nested /* comment */ still */
END $body$;
CREATE FUNCTION sales.g(int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT $1 * 2; END;
CREATE TRIGGER t BEFORE INSERT ON sales.items FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
COMMENT ON TABLE sales.orders IS 'orders; with "quotes" and $$dollars$$';
CREATE TABLE "Mixed Case" ("Weird ""col""" int);
INSERT INTO "Mixed Case" VALUES (1), (NULL);
CREATE TABLE part (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE part_1 PARTITION OF part FOR VALUES FROM (0) TO (100);
INSERT INTO part VALUES (5, E'\\.'), (6, '\.');
'''


def pg_script_seeds():
    """A real pg_dump script, from a throwaway PostgreSQL server."""
    bindir = None
    for v in ("17", "16", "15", "14", "13"):
        d = "/usr/lib/postgresql/%s/bin" % v
        if os.path.isfile(os.path.join(d, "initdb")):
            bindir = d
            break
    if bindir is None:
        print("make_seeds: no PostgreSQL server binaries; pg_script seeds not written")
        return
    tmp = tempfile.mkdtemp(prefix="pg-seed-")
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(tmp, "data")
    subprocess.run(as_user + [os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres",
                              "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    server = subprocess.Popen(as_user + [os.path.join(bindir, "postgres"), "-D", data, "-p", str(port),
                                         "-k", tmp, "-c", "listen_addresses=", "-c", "fsync=off"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = ["-h", tmp, "-p", str(port), "-U", "postgres"]
        deadline = time.time() + 30
        while subprocess.run(["pg_isready"] + conn, stdout=subprocess.DEVNULL).returncode != 0:
            if time.time() > deadline:
                raise RuntimeError("the seed PostgreSQL server did not start")
            time.sleep(0.1)
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres"] + conn,
                       input=PG_OBJECTS.encode(), check=True, stdout=subprocess.DEVNULL)
        for name, extra in (("dump", []), ("dump-inserts", ["--inserts"]),
                            ("dump-clean", ["--clean", "--if-exists", "--create"])):
            out = subprocess.run(["pg_dump", "--encoding=UTF8", "-d", "postgres"] + conn + extra,
                                 check=True, stdout=subprocess.PIPE).stdout
            put("pg_script", name, out)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- repository
def pack_seed(blobs):
    data = b""
    entries = b""
    for kind, payload in blobs:
        entries += bytes([kind, 0]) + hashlib.sha256(payload).digest()
        entries += struct.pack("<III", len(data), len(payload), len(payload))
        data += payload
    header = bytes([1]) + struct.pack("<I", len(blobs)) + entries
    return data + header + struct.pack("<I", len(header))


def repo_seeds():
    put("pack", "two-blobs", pack_seed([(0, b"hello world"), (1, b'{"nodes":[]}')]))
    put("pack", "empty", pack_seed([]))
    h = "ab" * 32
    put("repo_file", "index", json.dumps({"packs": [{"id": h, "size": 100, "blobs": [
        {"id": h, "type": "data", "offset": 0, "length": 50, "uncompressed_length": 60}]}]}))
    put("repo_file", "snapshot", json.dumps({
        "version": 2, "time": "2024-01-01T00:00:00Z", "tree": h, "paths": ["/srv"],
        "hostname": "host", "username": "root", "tags": ["daily"],
        "source": {"kind": "files", "url": "file:///srv"}}))
    put("repo_file", "tree", json.dumps({"nodes": [
        {"name": "a.txt", "type": "file", "mode": 420, "mtime": "2024-01-01T00:00:00Z",
         "size": 5, "content": [h]},
        {"name": "dir", "type": "dir", "subtree": h},
        {"name": "link", "type": "symlink", "linktarget": "a.txt"}]}))
    put("repo_file", "config", json.dumps({"version": 2, "id": h, "chunker_polynomial": "3f",
                                           "compression": {"level": 3}}))


def config_seeds():
    with open(os.path.join(ROOT, "examples", "backupd.toml"), "rb") as f:
        put("config", "example-backupd.toml", f.read())


def main():
    if os.path.isdir(CORPUS):
        for d in os.listdir(CORPUS):
            for n in os.listdir(os.path.join(CORPUS, d)):
                if n.startswith("seed-"):
                    os.remove(os.path.join(CORPUS, d, n))
    for v in (9, 10, 11):
        put("redis_rdb", "hand-v%d.rdb" % v, hand_rdb(v))
    put("redis_rdb", "header-only", b"REDIS0011\xff" + struct.pack("<Q", 0))
    redis_seeds()
    all_cmds = b"".join(resp(*c) for c in COMMANDS)
    put("redis_resp", "commands", all_cmds)
    put("redis_resp", "replies", b"+OK\r\n:1\r\n$3\r\nabc\r\n$-1\r\n*2\r\n-ERR x\r\n+QUEUED\r\n*-1\r\n")
    off, pieces = 1000, b""
    for c in COMMANDS:
        cmd = resp(*c)
        off += len(cmd)
        pieces += frame(off, 1700000000000, cmd)
    put("redis_resp", "piece", pieces)
    put("redis_lzf", "literal", struct.pack("<I", 3) + lzf_literal(b"abc"))
    put("redis_lzf", "backref", struct.pack("<I", 60) + lzf_literal(b"abc") + bytes([0xE0, 60 - 3 - 9, 2]))
    put("redis_lzf", "overlap", struct.pack("<I", 10) + lzf_literal(b"a") + bytes([0xE0, 0, 0]))
    mongo_seeds()
    pg_seeds()
    pg_wal_seeds()
    pg_script_seeds()
    repo_seeds()
    config_seeds()


if __name__ == "__main__":
    main()
