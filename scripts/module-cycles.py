#!/usr/bin/env python3
"""Fails if the top-level modules of any crate of the workspace import each other in a cycle.

An edge A -> B is any `crate::B` path written in a file of module A (use declarations, paths in
code and in doc links alike), so a cycle cannot hide behind a fully qualified path. Crates
cannot form cycles (cargo refuses them); this checks the modules inside each one.
Usage: scripts/module-cycles.py [--graph]   (--graph prints every crate's edges)
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = {"onceledger (binary)": "src", **{
    f"onceledger-{name}": f"crates/{name}/src" for name in ("core", "client", "server", "testkit")
}}
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
COMMENT = re.compile(r"^\s*//(?!/)")


def module_of(src, path):
    first = os.path.relpath(path, src).split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def edges_of(src):
    edges = {}
    for directory, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            module = module_of(src, path)
            if module in ("lib", "main"):
                continue
            with open(path, encoding="utf-8") as file:
                for line in file:
                    if COMMENT.match(line):
                        continue
                    for target in PATH.findall(line):
                        if target != module:
                            edges.setdefault(module, set()).add(target)
    return edges


def find_cycle(edges):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def main():
    failed = False
    for crate, src in CRATES.items():
        edges = edges_of(os.path.join(ROOT, src))
        if "--graph" in sys.argv:
            print(f"{crate}:")
            for module in sorted(edges):
                print(f"  {module} -> {', '.join(sorted(edges[module]))}")
        cycle = find_cycle(edges)
        if cycle:
            failed = True
            print(f"{crate}: import cycle: {' -> '.join(cycle)}")
    if not failed:
        print(f"no import cycle between the modules of {len(CRATES)} crates")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
