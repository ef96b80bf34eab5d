#!/usr/bin/env python3
"""Writes Redis protocol (RESP) for the Redis benchmark to stdout.

Mixed types, with NKEYS keys in all (default 1,000,000) once the strings
made by `DEBUG POPULATE` (45% of the keys, issued by the caller) are added:

- 15% hashes of 4-8 fields (listpack), 0.1% hashes of 300 fields (hashtable)
- 10% lists of 5-10 elements (listpack), 0.01% lists of 5000 (quicklist)
- 10% sets: half small integer sets (intset), half strings (hashtable)
- 10% sorted sets of 5 members (listpack), 0.05% of 300 (skiplist)
- 9.4% strings with a TTL (SET ... PX), 0.5% streams of 10 entries, one in
  four with a consumer group and pending entries

Usage: redis_gen.py NKEYS SEED > data.resp
"""

import random
import sys


def main() -> None:
    nkeys = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rnd = random.Random(seed)
    out = sys.stdout.buffer
    buf = []

    def cmd(*args) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        buf.append(b"".join(parts))
        if len(buf) >= 10000:
            out.write(b"".join(buf))
            buf.clear()

    def word(n: int) -> str:
        return "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))

    share = lambda f: int(nkeys * f)  # noqa: E731

    for i in range(share(0.15)):
        args = ["HSET", f"hash:{i}"]
        for f in range(rnd.randint(4, 8)):
            args += [f"field{f}", word(rnd.randint(3, 30))]
        cmd(*args)
    for i in range(share(0.001)):
        args = ["HSET", f"bighash:{i}"]
        for f in range(300):
            args += [f"f{f}", f * i]
        cmd(*args)
    for i in range(share(0.10)):
        cmd("RPUSH", f"list:{i}", *[word(rnd.randint(4, 24)) for _ in range(rnd.randint(5, 10))])
    for i in range(share(0.0001)):
        for start in range(0, 5000, 500):
            cmd("RPUSH", f"biglist:{i}", *[f"item-{start + j}" for j in range(500)])
    for i in range(share(0.05)):
        cmd("SADD", f"intset:{i}", *[rnd.randint(0, 1_000_000) for _ in range(rnd.randint(3, 12))])
    for i in range(share(0.05)):
        cmd("SADD", f"set:{i}", *[word(8) for _ in range(rnd.randint(3, 12))])
    for i in range(share(0.10)):
        args = ["ZADD", f"zset:{i}"]
        for m in range(5):
            args += [rnd.random() * 1000, f"m{m}-{word(6)}"]
        cmd(*args)
    for i in range(share(0.0005)):
        args = ["ZADD", f"bigzset:{i}"]
        for m in range(300):
            args += [rnd.random(), f"member-{m}"]
        cmd(*args)
    for i in range(share(0.094)):
        cmd("SET", f"ttl:{i}", word(rnd.randint(10, 200)), "PX", rnd.randint(3_600_000, 86_400_000))
    for i in range(share(0.005)):
        key = f"stream:{i}"
        for e in range(10):
            cmd("XADD", key, "*", "sensor", i, "value", rnd.random(), "note", word(12))
        if i % 4 == 0:
            cmd("XGROUP", "CREATE", key, "workers", "0")
            cmd("XREADGROUP", "GROUP", "workers", "w1", "COUNT", 3, "STREAMS", key, ">")
    out.write(b"".join(buf))


if __name__ == "__main__":
    main()
