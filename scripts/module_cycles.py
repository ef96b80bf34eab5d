#!/usr/bin/env python3
"""Lists the import cycles between source files of each crate.

A file imports another when its non-test code names an item of the
other's module by a `crate::`, `super::` or `self::` path (in a `use` or
inline). A module and its own submodules are one unit: a `mod.rs` is the
front of the files under it, so edges between a module and its
descendants are not counted; every other edge is. A path through one of
the crate root's re-exports (`crate::Item`) counts as an import of the
module the item comes from. Cycles are strongly connected components of that graph. Exit
status 1 when there is one, so the test script can hold the line.

Usage: scripts/module_cycles.py [--verbose] [crates/NAME ...]
"""
import os
import re
import sys


def module_files(src):
    """Module path (tuple) -> file, for one crate's src directory."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel in (['lib'], ['main']):
                key = ()
            elif rel[-1] == 'mod':
                key = tuple(rel[:-1])
            else:
                key = tuple(rel)
            mods[key] = path
    return mods


def strip_tests(text):
    """The text without `#[cfg(test)] mod NAME { ... }` blocks and comments."""
    text = re.sub(r'//[^\n]*', '', text)
    out = []
    i = 0
    for m in re.finditer(r'#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{', text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth = 1
        j = m.end()
        while j < len(text) and depth:
            if text[j] == '{':
                depth += 1
            elif text[j] == '}':
                depth -= 1
            j += 1
        i = j
    out.append(text[i:])
    return ''.join(out)


def expand(prefix, body):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (as lists of segments)."""
    body = body.strip()
    if body.startswith('{') and body.endswith('}'):
        inner = body[1:-1]
        parts, depth, cur = [], 0, ''
        for ch in inner:
            if ch == ',' and depth == 0:
                parts.append(cur)
                cur = ''
                continue
            depth += ch == '{'
            depth -= ch == '}'
            cur += ch
        parts.append(cur)
        res = []
        for p in parts:
            if p.strip():
                res += expand(prefix, p)
        return res
    m = re.match(r'([\w:]*?)::(\{.*\})$', body, re.S)
    if m:
        return expand(prefix + m.group(1).split('::'), m.group(2))
    body = re.sub(r'\s+as\s+\w+$', '', body)
    return [prefix + [s for s in body.split('::') if s]]


def resolve(module, segs, mods):
    """The module (tuple) a path from `module` names, the longest known prefix."""
    if not segs:
        return None
    if segs[0] == 'crate':
        base, rest = (), segs[1:]
    elif segs[0] in ('super', 'self'):
        base = module
        rest = segs
        while rest and rest[0] in ('super', 'self'):
            if rest[0] == 'super':
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    best = base if base in mods else None
    for k in range(1, len(rest) + 1):
        cand = base + tuple(rest[:k])
        if cand in mods:
            best = cand
    return best


def root_exports(mods):
    """Item name -> path of what the crate root re-exports (`pub use a::B;`)."""
    text = strip_tests(open(mods[()], encoding='utf-8').read())
    out = {}
    for m in re.finditer(r'\bpub\s+use\s+([^;]*)\s*;', text, re.S):
        for p in expand([], m.group(1)):
            if p and p[0] not in ('crate', 'self', 'super'):
                p = ['crate'] + p
            out[p[-1]] = p
    return out


def edges(src):
    mods = module_files(src)
    exports = root_exports(mods)
    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        # A file named foo.rs beside a directory foo/ is the module foo.
        text = strip_tests(open(path, encoding='utf-8').read())
        paths = []
        for m in re.finditer(r'\buse\s+((?:crate|super|self)(?:::[^;]*))\s*;', text, re.S):
            paths += expand([], m.group(1))
        for m in re.finditer(r'(?<![\w:])((?:crate|super|self)(?:::\w+)+)', text):
            paths.append(m.group(1).split('::'))
        for p in paths:
            # `crate::Item` re-exported by the root: the module it comes from.
            if len(p) >= 2 and p[0] == 'crate' and p[1] in exports:
                p = exports[p[1]] + p[2:]
            target = resolve(mod, p, mods)
            if target is None or target == mod:
                continue
            if target[:len(mod)] == mod or mod[:len(target)] == target:
                continue
            graph[mod].add(target)
    return mods, graph


def sccs(graph):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    verbose = '--verbose' in sys.argv
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
    crates = args or sorted(
        os.path.join(root, 'crates', c) for c in os.listdir(os.path.join(root, 'crates')))
    found = 0
    for crate in crates:
        src = os.path.join(crate, 'src')
        if not os.path.isdir(src):
            continue
        mods, graph = edges(src)
        for comp in sccs(graph):
            found += 1
            names = ['::'.join(m) or 'lib' for m in comp]
            print(f'{os.path.basename(crate)}: {len(comp)} modules in a cycle: {", ".join(names)}')
            if verbose:
                for m in comp:
                    for t in sorted(graph[m]):
                        if t in comp:
                            print(f'    {"::".join(m) or "lib"} -> {"::".join(t) or "lib"}')
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
