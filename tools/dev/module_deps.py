#!/usr/bin/env python3
"""Module dependency picture of the workspace's crates, and a check that it has no cycle.

    python3 tools/dev/module_deps.py            # edges per crate, then "no module cycle"
    python3 tools/dev/module_deps.py --check    # only the check (exit 1 naming a cycle)
    python3 tools/dev/module_deps.py --crates   # which workspace crate depends on which

A module is a file under a crate's src/ (`src/loader/read.rs` is `loader::read`, a `mod.rs`
is its folder's module). An edge A -> B is a `crate::B...` path written in A outside its
`#[cfg(test)]` block (tests may reach anywhere). Edges are taken between top-level modules of
a crate (`loader::read -> image::decode` counts as `loader -> image`) and, inside each
top-level module, between its submodules; a cycle at either level is reported.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATH_RE = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)")
SUPER_RE = re.compile(r"\bsuper::([a-z_][a-z0-9_]*)")


def crates():
    for toml in sorted(ROOT.glob("*/Cargo.toml")):
        src = toml.parent / "src"
        if (src / "lib.rs").exists():
            yield toml.parent.name, src


def module_of(src: Path, f: Path):
    rel = f.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def code_outside_tests(text: str) -> str:
    """The file's text up to its first `#[cfg(test)]` (tests sit at the end by convention),
    with comments removed."""
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def find_cycles(edges):
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, on, stack, out = {}, {}, set(), [], []

    def visit(n):
        index[n] = low[n] = len(index)
        stack.append(n)
        on.add(n)
        for m in sorted(graph[n]):
            if m not in index:
                visit(m)
                low[n] = min(low[n], low[m])
            elif m in on:
                low[n] = min(low[n], index[m])
        if low[n] == index[n]:
            comp = []
            while True:
                m = stack.pop()
                on.discard(m)
                comp.append(m)
                if m == n:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in sorted(graph):
        if n not in index:
            visit(n)
    return out


def crate_deps():
    """Workspace crates and the workspace crates each depends on (normal dependencies, from
    the Cargo.toml files; the root package `dspnet` last)."""
    names = {}
    manifests = sorted(ROOT.glob("*/Cargo.toml")) + [ROOT / "Cargo.toml"]
    for toml in manifests:
        text = toml.read_text()
        m = re.search(r'^\[package\]\s*\nname\s*=\s*"([^"]+)"', text, re.M)
        if m:
            names[m.group(1)] = text
    for name, text in names.items():
        deps = text.split("[dependencies]", 1)[1].split("\n[", 1)[0] if "[dependencies]" in text else ""
        mine = sorted(d for d in names if d != name and re.search(rf"^{re.escape(d)}(\.workspace)?\s*=", deps, re.M))
        print(f"{name} -> {', '.join(mine) if mine else '(none)'}")


def main():
    if "--crates" in sys.argv:
        crate_deps()
        return
    check_only = "--check" in sys.argv
    cycles = []
    for crate, src in crates():
        modules = {}
        for f in sorted(src.rglob("*.rs")):
            modules[tuple(module_of(src, f))] = code_outside_tests(f.read_text())
        known = set(modules)
        top, inner = set(), {}
        for mod, text in modules.items():
            if not mod:
                continue
            targets = []
            for m in PATH_RE.finditer(text):
                path = m.group(1).split("::")
                # the longest prefix that is a module
                for n in range(len(path), 0, -1):
                    if tuple(path[:n]) in known:
                        targets.append(tuple(path[:n]))
                        break
            for m in SUPER_RE.finditer(text):
                parent = mod[:-1] if modules.get(mod) is not None else mod
                cand = tuple(parent[:-1]) + (m.group(1),) if len(parent) >= 1 else (m.group(1),)
                if cand in known:
                    targets.append(cand)
            for t in targets:
                if t[0] != mod[0]:
                    top.add((mod[0], t[0]))
                elif len(mod) > 1 and len(t) > 1 and mod[1] != t[1]:
                    inner.setdefault(mod[0], set()).add((mod[1], t[1]))
        if not check_only:
            print(f"{crate}:")
            for a in sorted({a for a, _ in top} | {k[0] for k in modules if k}):
                deps = sorted(b for x, b in top if x == a)
                print(f"  {a} -> {', '.join(deps) if deps else '(none)'}")
                for x, y in sorted(inner.get(a, ())):
                    print(f"    {a}::{x} -> {a}::{y}")
        for c in find_cycles(top):
            cycles.append(f"{crate}: " + " <-> ".join(c))
        for m, edges in sorted(inner.items()):
            for c in find_cycles(edges):
                cycles.append(f"{crate}::{m}: " + " <-> ".join(c))
    if cycles:
        for c in cycles:
            print(f"module cycle: {c}")
        sys.exit(1)
    print("no module cycle")


if __name__ == "__main__":
    main()
