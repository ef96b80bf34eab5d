#!/usr/bin/env python3
"""What a write-only key opens: the attacker's view of REPOSITORY_FORMAT §6.5.

Usage:
    attack.py REPO WRITER_PASSWORD FULL_PASSWORD

Plays someone who took a host with a write-only key: its key file, its
password and full access to storage. Every 32-byte secret the write-only
key files hold once opened with WRITER_PASSWORD is tried, as an AES-256-GCM
key and as an X25519 private key for the HPKE session headers, on every
sealed object of the repository: each metadata file whole, and in each pack
the sealed header and every sealed blob. The attacker does not know where
blobs begin and end; the test does: FULL_PASSWORD opens the repository
(reader.py) only to name those regions, so that every real ciphertext is
tried, not only whole files.

Prints JSON: the secrets found, how many sealed objects were tried per
directory, and every one that opened (`opened`, as `path[@offset]`).
Lock files and audit records are sealed with the lock key a write-only key
holds by design (§6.5), so they are expected there and nothing else.
"""

from __future__ import annotations

import json
import os
import sys

import reader
from reader import SESSION_INFO, SESSION_MAGIC, aes_open, b64, hpke_open_base


def writer_secrets(root: str, password: bytes) -> list[bytes]:
    """Every 32-byte value in the write-only key files PASSWORD opens."""
    out: list[bytes] = []
    for name in sorted(os.listdir(os.path.join(root, "keys"))):
        with open(os.path.join(root, "keys", name), "rb") as f:
            kf = json.loads(f.read())
        if kf.get("access") != "write-only" or kf.get("kdf") != "argon2id":
            continue
        plain = reader.open_key_data(kf, password, name)
        if plain is None:
            continue
        for value in json.loads(plain).values():
            if isinstance(value, str):
                try:
                    raw = b64(value, name)
                except reader.FormatError:
                    continue
                if len(raw) == 32:
                    out.append(raw)
    if not out:
        raise SystemExit("no write-only key file opens with the writer's password")
    return out


def opens(secrets: list[bytes], sealed: bytes) -> bool:
    """Whether any secret opens `sealed` directly or through a session."""
    for s in secrets:
        if aes_open(s, sealed) is not None:
            return True
    if sealed.startswith(SESSION_MAGIC) and len(sealed) > 88:
        enc, ct = sealed[8:40], sealed[40:88]
        for s in secrets:
            session = hpke_open_base(s, enc, SESSION_INFO, ct)
            if session is not None:
                return True
    return False


def regions(repo: reader.Repo, root: str) -> dict[str, list[tuple[int, int]]]:
    """Per pack path, the (offset, length) of its sealed header and blobs."""
    out: dict[str, list[tuple[int, int]]] = {}
    for name in repo.list_names("data"):
        path = repo.pack_path(name)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            data = f.read()
        hlen, entries = reader.parse_header(repo, name, data, size)
        spans = [(size - 4 - hlen, hlen)]
        spans += [(off, length) for (_, _, off, length, _, _) in entries]
        out[os.path.relpath(path, root)] = spans
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    root, writer_password, full_password = argv[1:]
    secrets = writer_secrets(root, os.fsencode(writer_password))
    packs = regions(reader.Repo(root, os.fsencode(full_password)), root)
    tried: dict[str, int] = {}
    opened: list[str] = []
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            top = rel.split(os.sep)[0]
            with open(path, "rb") as f:
                data = f.read()
            spans = packs.get(rel, [(0, len(data))])
            for off, length in spans:
                tried[top] = tried.get(top, 0) + 1
                if opens(secrets, data[off:off + length]):
                    opened.append(rel if rel not in packs else f"{rel}@{off}")
    print(json.dumps({"secrets": len(secrets), "tried": tried, "opened": opened}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
