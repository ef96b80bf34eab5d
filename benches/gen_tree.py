#!/usr/bin/env python3
"""Generate a reproducible file tree for backup benchmarks.

The same --size and --seed always give byte-identical files, directory
layout, symlinks and mtimes, on any machine (the generator uses only
Python's seeded Mersenne Twister, never the system's files).

Mix (fractions of --size):

* 30 % source-code-like text: many small files (median about 6 KiB) in a
  nested project layout; compressible about 3-5x by zstd.
* 38 % structured binary: object-file-like and table-like data (skewed
  byte distributions, counters, string tables, zero padding); compressible
  about 1.5-3x.
* 27 % incompressible random data: a few large files and some medium ones.
* 5 % exact duplicates of files elsewhere in the tree (vendored copies,
  a copied archive), so deduplication across files has something to find.

Plus a few edge cases: empty files, empty directories, relative symlinks.

With --small-files N the tree is instead N small files (a source checkout
or a mail spool: median about 1.2 KiB, none over 64 KiB; 85 % text, 15 %
binary) in directories of about 60 files, nested up to four deep, plus
the same edge cases: it measures what each file costs, not each byte.

Usage: gen_tree.py --out DIR [--size BYTES | --size-gb GB | --small-files N] [--seed N]
"""

import argparse
import array
import os
import random
import sys

MIB = 1024 * 1024
GIB = 1024 * MIB
FIXED_MTIME = 1_700_000_000  # 2023-11-14, all files and dirs

KEYWORDS = {
    "rs": ["fn", "let", "mut", "pub", "impl", "match", "if", "else", "return",
           "struct", "enum", "use", "for", "in", "while", "Some", "None", "Ok",
           "Err", "self", "Self", "&mut", "&", "async", "await", "?", "mod"],
    "py": ["def", "return", "if", "elif", "else", "for", "in", "while", "import",
           "from", "class", "self", "None", "True", "False", "with", "as",
           "try", "except", "raise", "lambda", "yield", "not", "and", "or"],
    "go": ["func", "return", "if", "else", "for", "range", "var", ":=", "type",
           "struct", "interface", "nil", "err", "package", "import", "go",
           "defer", "chan", "select", "case", "switch", "map"],
    "c": ["int", "char", "void", "return", "if", "else", "for", "while",
          "struct", "static", "const", "unsigned", "size_t", "NULL", "sizeof",
          "switch", "case", "break", "goto", "uint32_t", "uint8_t", "#define"],
}
EXTS = {"rs": ".rs", "py": ".py", "go": ".go", "c": ".c"}
SYLLABLES = ["get", "set", "buf", "len", "idx", "node", "tree", "pack", "blob",
             "read", "write", "open", "close", "key", "val", "map", "list",
             "item", "count", "size", "data", "file", "path", "name", "hash",
             "id", "ctx", "cfg", "err", "msg", "src", "dst", "tmp", "max",
             "min", "off", "pos", "ptr", "ref", "chunk", "cache", "lock",
             "entry", "table", "row", "col", "page", "query", "conn", "pool"]

LICENSE = (
    "Licensed under the Apache License, Version 2.0 (the \"License\");\n"
    "you may not use this file except in compliance with the License.\n"
    "You may obtain a copy of the License at\n\n"
    "    http://www.apache.org/licenses/LICENSE-2.0\n\n"
    "Unless required by applicable law or agreed to in writing, software\n"
    "distributed under the License is distributed on an \"AS IS\" BASIS,\n"
    "WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.\n"
)


def ident(rng):
    n = rng.choice((1, 2, 2, 3))
    parts = [rng.choice(SYLLABLES) for _ in range(n)]
    style = rng.random()
    if style < 0.6:
        return "_".join(parts)
    if style < 0.9:
        return parts[0] + "".join(p.capitalize() for p in parts[1:])
    return "".join(p.capitalize() for p in parts)


class TextGen:
    """Source-like lines: a shared pool per language plus per-file identifiers."""

    def __init__(self, rng):
        self.rng = rng
        self.pools = {}
        for lang, kws in KEYWORDS.items():
            pool = []
            for _ in range(20000):
                depth = rng.choice((0, 1, 1, 2, 2, 2, 3, 3, 4))
                words = []
                for _ in range(rng.randint(1, 9)):
                    r = rng.random()
                    if r < 0.35:
                        words.append(rng.choice(kws))
                    elif r < 0.8:
                        words.append(ident(rng))
                    elif r < 0.9:
                        words.append(str(rng.randint(0, 4096)))
                    else:
                        words.append(rng.choice(("(", ")", "{", "}", "[", "]",
                                                 "=", "==", "+", "->", ",", ";",
                                                 "\"" + ident(rng) + "\"")))
                line = "    " * depth + " ".join(words)
                if rng.random() < 0.08:
                    line = "    " * depth + ("// " if lang != "py" else "# ") + " ".join(
                        ident(rng) for _ in range(rng.randint(3, 10)))
                pool.append(line)
            pool.extend([""] * 2000)
            self.pools[lang] = pool

    def file(self, lang, size):
        rng = self.rng
        header = ("// " if lang != "py" else "# ")
        out = [header + line if line else "" for line in LICENSE.split("\n")]
        total = sum(len(s) + 1 for s in out)
        pool = self.pools[lang]
        # Lines come in runs from a random place in the pool so that files
        # share fragments, like real code does.
        while total < size:
            start = rng.randrange(len(pool))
            run = pool[start:start + rng.randint(1, 12)]
            out.extend(run)
            total += sum(len(s) + 1 for s in run)
        data = "\n".join(out).encode()
        return data[:size] if size > 0 else b""


def skew_table(rng):
    # Maps uniform bytes to a distribution like machine code: many zeros
    # and a few frequent opcodes, the rest spread out.
    frequent = [0x00, 0xFF, 0x48, 0x89, 0x8B, 0xE8, 0x0F, 0x85, 0x84, 0x24, 0x44, 0xC3]
    table = bytearray(256)
    for i in range(256):
        r = rng.random()
        if r < 0.30:
            table[i] = 0
        elif r < 0.55:
            table[i] = rng.choice(frequent)
        else:
            table[i] = rng.randrange(256)
    return bytes(table)


class BinGen:
    def __init__(self, rng):
        self.rng = rng
        self.tables = [skew_table(rng) for _ in range(8)]
        self.strings = [ident(rng).encode() for _ in range(5000)]

    def segment(self, n):
        rng = self.rng
        kind = rng.random()
        if kind < 0.45:  # code-like
            return rng.randbytes(n).translate(rng.choice(self.tables))
        if kind < 0.65:  # table of little-endian records with counters
            base = rng.randrange(1 << 40)
            step = rng.choice((1, 1, 8, 16, 4096))
            count = n // 8
            a = array.array("Q", range(base, base + step * count, step))
            if sys.byteorder != "little":
                a.byteswap()
            raw = bytearray(a.tobytes())
            noise = rng.randbytes(count)
            raw[3::8] = noise[: len(raw[3::8])]
            return bytes(raw[:n])
        if kind < 0.85:  # string table
            parts, total = [], 0
            while total < n:
                s = rng.choice(self.strings)
                parts.append(s)
                total += len(s) + 1
            return b"\0".join(parts)[:n]
        if kind < 0.93:  # padding
            return bytes(n)
        return rng.randbytes(n)  # embedded compressed data

    def file(self, size):
        rng = self.rng
        out, total = [b"\x7fELF\x02\x01\x01" + bytes(9)], 16
        while total < size:
            n = min(size - total, rng.choice((512, 4096, 16384, 65536, 262144)))
            out.append(self.segment(n))
            total += n
        return b"".join(out)[:size]


def log_uniform(rng, lo, hi):
    import math
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


class Writer:
    def __init__(self, root):
        self.root = root
        self.files = 0
        self.bytes = 0
        self.written = []  # (relpath, size) of regular files, for duplicates

    def write(self, rel, data):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.files += 1
        self.bytes += len(data)
        self.written.append((rel, len(data)))

    def copy(self, src_rel, dst_rel):
        with open(os.path.join(self.root, src_rel), "rb") as f:
            data = f.read()
        self.write(dst_rel, data)


def gen_text(w, rng, tg, budget):
    langs = list(KEYWORDS)
    projects = 0
    while budget > 0:
        lang = rng.choice(langs)
        proj = f"src/{ident(rng)}-{projects:03d}"
        projects += 1
        dirs = [proj]
        nfiles = rng.randint(40, 400)
        for _ in range(nfiles):
            if budget <= 0:
                break
            if rng.random() < 0.12 or len(dirs) == 1:
                parent = rng.choice(dirs)
                if parent.count("/") < 7:
                    dirs.append(f"{parent}/{ident(rng)}")
            d = rng.choice(dirs)
            size = min(int(rng.lognormvariate(8.7, 1.0)), 256 * 1024)
            size = min(size, budget)
            name = f"{d}/{ident(rng)}{EXTS[lang]}"
            if os.path.exists(os.path.join(w.root, name)):
                continue
            w.write(name, tg.file(lang, size))
            budget -= size
        w.write(f"{proj}/LICENSE", LICENSE.encode())
        budget -= len(LICENSE)


def gen_binary(w, rng, bg, budget):
    i = 0
    while budget > 0:
        size = min(log_uniform(rng, 16 * 1024, 24 * MIB), budget)
        sub = rng.choice(("lib", "lib/x86_64", "bin", "share/db", "share/db/pages", "opt/tool/bin"))
        w.write(f"data/{sub}/{ident(rng)}-{i:05d}.bin", bg.file(size))
        budget -= size
        i += 1


def gen_random(w, rng, budget):
    i = 0
    while budget > 0:
        big = rng.random() < 0.25
        size = log_uniform(rng, 8 * MIB, 96 * MIB) if big else log_uniform(rng, 64 * 1024, 8 * MIB)
        size = min(size, budget)
        sub = rng.choice(("media/photos", "media/video", "archives", f"media/photos/{2015 + i % 9}"))
        ext = rng.choice((".jpg", ".mp4", ".gz", ".enc"))
        w.write(f"{sub}/{ident(rng)}-{i:05d}{ext}", rng.randbytes(size))
        budget -= size
        i += 1


def gen_duplicates(w, rng, budget):
    candidates = sorted(w.written)
    i = 0
    while budget > 0 and candidates:
        rel, size = rng.choice(candidates)
        if size == 0 or size > budget + MIB:
            candidates.remove((rel, size))
            continue
        top = "vendor" if rel.startswith("src/") else "backup-copy"
        w.copy(rel, f"{top}/{i:04d}/{os.path.basename(rel)}")
        budget -= size
        i += 1


def gen_small(w, rng, tg, bg, count):
    langs = list(KEYWORDS)
    dirs = [""]
    for i in range(count):
        if i % 60 == 0:
            parent = rng.choice(dirs[-200:])
            if parent.count("/") >= 4:
                parent = ""
            dirs.append(f"{parent}{ident(rng)}-{len(dirs):05d}/")
        d = dirs[-1]
        size = min(int(rng.lognormvariate(7.1, 1.1)), 64 * 1024)
        if rng.random() < 0.85:
            lang = rng.choice(langs)
            w.write(f"{d}{ident(rng)}-{i}{EXTS[lang]}", tg.file(lang, size))
        else:
            w.write(f"{d}{ident(rng)}-{i}.bin", bg.file(size))


def gen_edge_cases(w):
    w.write("README.bench", b"backup benchmark tree; generated by benches/gen_tree.py\n")
    w.write("empty/empty-file", b"")
    os.makedirs(os.path.join(w.root, "empty/empty-dir/nested-empty-dir"), exist_ok=True)
    first_src = next((r for r, s in sorted(w.written) if r.startswith("src/") and s > 0), None)
    if first_src:
        os.symlink(os.path.join("..", first_src), os.path.join(w.root, "empty/link-to-source"))
    os.symlink("does-not-exist", os.path.join(w.root, "empty/dangling-link"))


def fix_mtimes(root):
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (FIXED_MTIME, FIXED_MTIME),
                     follow_symlinks=False)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory to create (must not exist)")
    ap.add_argument("--size", type=int, help="total bytes")
    ap.add_argument("--size-gb", type=float, help="total GiB (default 1)")
    ap.add_argument("--small-files", type=int, help="N small files instead of a size")
    ap.add_argument("--seed", type=int, default=20240601)
    a = ap.parse_args()
    total = a.size if a.size is not None else int((a.size_gb or 1.0) * GIB)
    if os.path.exists(a.out):
        sys.exit(f"gen_tree.py: {a.out} exists; remove it first")
    os.makedirs(a.out)
    w = Writer(a.out)
    if a.small_files:
        gen_small(w, random.Random(a.seed * 10 + 7), TextGen(random.Random(a.seed * 10 + 2)),
                  BinGen(random.Random(a.seed * 10 + 4)), a.small_files)
        gen_edge_cases(w)
        fix_mtimes(a.out)
        dirs = sum(len(d) for _, d, _ in os.walk(a.out))
        print(f"gen_tree.py: {w.files} files, {dirs} directories, {w.bytes} bytes in {a.out}")
        return
    # One generator per part, each with its own seed, so parts do not shift
    # each other when the mix changes.
    gen_text(w, random.Random(a.seed * 10 + 1), TextGen(random.Random(a.seed * 10 + 2)), int(total * 0.30))
    gen_binary(w, random.Random(a.seed * 10 + 3), BinGen(random.Random(a.seed * 10 + 4)), int(total * 0.38))
    gen_random(w, random.Random(a.seed * 10 + 5), int(total * 0.27))
    gen_duplicates(w, random.Random(a.seed * 10 + 6), int(total * 0.05))
    gen_edge_cases(w)
    fix_mtimes(a.out)
    dirs = sum(len(d) for _, d, _ in os.walk(a.out))
    print(f"gen_tree.py: {w.files} files, {dirs} directories, {w.bytes} bytes in {a.out}")


if __name__ == "__main__":
    main()
