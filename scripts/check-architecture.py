#!/usr/bin/env python3
"""Keeps the code shaped as ARCHITECTURE.md says, for every crate of the workspace:

- no import loop between the top-level modules of a crate (`use crate::a` in module b and
  `use crate::b` in module a, or a longer ring); references inside one module's own subtree
  are that module's business;
- no source file over FILE_MAX lines and no function over FN_MAX lines, tests excluded.

Reads the sources as text (rustfmt'd code: a function ends at the first `}` at its own
indentation). Test code is skipped: files named tests.rs or *_tests.rs, tests/ and
examples/ directories, and everything from a `#[cfg(test)]` line on.

Usage: scripts/check-architecture.py [--report]   (exit 1 on any violation)
"""

import os
import re
import sys
from pathlib import Path

FILE_MAX = 600
FN_MAX = 80
# Crates: the directory that holds Cargo.toml with a src/ beside it.
ROOT = Path(__file__).resolve().parent.parent

FN_RE = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")
USE_RE = re.compile(r"\bcrate::(\w+)")
SUPER_RE = re.compile(r"\b((?:super::)+)(\w+)")
MOD_RE = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?mod\s+(\w+)\s*;")


# Build output and scratch trees, which background builds create and delete while this runs.
SKIP_DIRS = {"target", "node_modules", "bin"}


def crates(root):
    found = []
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        if "Cargo.toml" in files and os.path.isdir(os.path.join(top, "src")):
            found.append(Path(top))
    return sorted(found)


def is_test_file(path: Path) -> bool:
    return path.name == "tests.rs" or path.name.endswith("_tests.rs") or "tests" in path.parts[-2:-1]


def non_test_lines(path: Path):
    """The file's lines up to its first #[cfg(test)] (test modules sit at the end)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]":
            return lines[:i]
    return lines


def module_path(src: Path, path: Path):
    """src/a/b.rs -> [a, b]; src/a/mod.rs and src/a.rs -> [a]; lib.rs/main.rs -> []."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return parts


def top_module(src: Path, path: Path):
    """Top-level module a file belongs to (None for the crate root and bin/ files)."""
    rel = path.relative_to(src)
    if rel.parts[0] == "bin":
        return None
    if len(rel.parts) == 1:
        stem = rel.stem
        return None if stem in ("lib", "main") else stem
    return rel.parts[0]


def find_cycle(graph):
    """One cycle in a directed graph {node: set(nodes)}, as a list, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {n: WHITE for n in graph}
    stack = []

    def visit(n):
        color[n] = GREY
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m not in color:
                continue
            if color[m] == GREY:
                return stack[stack.index(m):] + [m]
            if color[m] == WHITE:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        color[n] = BLACK
        return None

    for n in sorted(graph):
        if color[n] == WHITE:
            found = visit(n)
            if found:
                return found
    return None


def check_crate(crate: Path, problems, report, root=ROOT):
    src = crate / "src"
    # The tests crate is all test harness: sizes are not held to the limits, loops are.
    sized = crate.name != "tests"
    files = [p for p in sorted(src.rglob("*.rs")) if not is_test_file(p)]
    graph = {}
    for path in files:
        lines = non_test_lines(path)
        rel = path.relative_to(root)
        if sized and len(lines) > FILE_MAX:
            problems.append(f"{rel}: {len(lines)} lines (max {FILE_MAX})")
        # Functions: from the fn line to the closing brace at the same indentation.
        i = 0
        while i < len(lines):
            m = FN_RE.match(lines[i])
            if m and not lines[i].rstrip().endswith(";"):
                indent = m.group(1)
                end = i
                while end < len(lines) and not (
                    lines[end].startswith(indent + "}") and not lines[end].startswith(indent + "} else")
                    and (len(lines[end]) == len(indent) + 1 or lines[end][len(indent) + 1] in ")};,")
                ):
                    end += 1
                length = end - i + 1
                if sized and length > FN_MAX:
                    problems.append(f"{rel}:{i + 1}: fn {m.group(8)} is {length} lines (max {FN_MAX})")
            i += 1
        top = top_module(src, path)
        if top is None:
            continue
        graph.setdefault(top, set())
        for line in lines:
            if line.lstrip().startswith("//"):
                continue
            deps = USE_RE.findall(line)
            here = module_path(src, path)
            for supers, name in SUPER_RE.findall(line):
                up = here[: len(here) - supers.count("super::")]
                deps.append(up[0] if up else name)
            for dep in deps:
                if dep != top:
                    graph[top].add(dep)
    mods = set(graph)
    graph = {n: {m for m in deps if m in mods} for n, deps in graph.items()}
    cycle = find_cycle(graph)
    if cycle:
        problems.append(f"{crate.relative_to(root)}: import loop {' -> '.join(cycle)}")
    if report:
        print(f"== {crate.relative_to(root)}")
        for n in sorted(graph):
            print(f"  {n} -> {', '.join(sorted(graph[n])) or '-'}")


def self_test():
    """The check finds what it is for: a loop, a long file, a long function."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        src = root / "demo" / "src"
        src.mkdir(parents=True)
        (root / "demo" / "Cargo.toml").write_text("[package]\n")
        (src / "lib.rs").write_text("pub mod a;\npub mod b;\n")
        (src / "a.rs").write_text("use crate::b::B;\npub struct A;\n")
        body = "\n".join(["    let _x = 1;"] * (FN_MAX + 1))
        (src / "b.rs").write_text("use super::a::A;\npub struct B;\n\npub fn long() {\n" + body + "\n}\n"
                                  + "// filler\n" * FILE_MAX)
        found = []
        check_crate(root / "demo", found, False, root)
        kinds = ["import loop", "lines (max", "fn long is"]
        missing = [k for k in kinds if not any(k in p for p in found)]
        if missing:
            print(f"check-architecture self-test: did not find {missing} in {found}")
            return False
    return True


def main():
    report = "--report" in sys.argv
    if not self_test():
        return 2
    problems = []
    for crate in crates(ROOT):
        check_crate(crate, problems, report)
    for p in problems:
        print(p)
    if problems:
        print(f"check-architecture: {len(problems)} problem(s)")
        return 1
    print("check-architecture: no import loop, no file over "
          f"{FILE_MAX} lines, no function over {FN_MAX} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
