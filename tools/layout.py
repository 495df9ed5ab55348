"""Check the shape of the source tree from its text alone (ast; nothing of the package is imported).

    python -m tools.layout [--root src/vlfuse] [--max-lines 80]

Rules, each reported with the file and line that breaks it:
  cycles     no import cycle between modules (module-level and function-level imports both count;
             imports under `if TYPE_CHECKING:` do not, as they never run)
  private    no import of another module's `_private` name, and no `module._private` reached
             through an imported module (a `_private` module is fine inside its own package)
  importlib  no `importlib.import_module` / `__import__`: lookups go through explicit tables
  size       no function of --max-lines lines or more (the largest is always printed)

Exit status 0 when every rule holds, 1 when any fails.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / "src" / "vlfuse"
MAX_LINES = 80


@dataclass(frozen=True)
class Finding:
    rule: str
    path: str  # relative to the root's parent, e.g. "vlfuse/data/shards.py"
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


@dataclass
class Module:
    name: str  # dotted, e.g. "vlfuse.data.shards"
    path: Path
    rel: str
    is_package: bool
    tree: ast.Module


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)
    largest: tuple[str, int, str, int] | None = None  # (rel path, line, qualified name, lines)

    @property
    def ok(self) -> bool:
        return not self.findings

    def by_rule(self, rule: str) -> list[Finding]:
        return [f for f in self.findings if f.rule == rule]


# --------------------------------------------------------------------------- reading the tree

def load_modules(root: Path) -> dict[str, Module]:
    """Every .py file under `root` (a package directory), keyed by dotted module name."""
    root = root.resolve()
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        rel = path.relative_to(root.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        modules[".".join(parts)] = Module(".".join(parts), path, rel, is_package, tree)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_nodes(tree: ast.AST):
    """Every node that runs at some point: all of them but the bodies of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@dataclass(frozen=True)
class Import:
    target: str  # the module imported
    name: str | None  # the name taken from it (`from target import name`), else None
    line: int


def imports_of(module: Module, modules: dict[str, Module]) -> list[Import]:
    """The project modules `module` imports at run time; `from pkg import sub` counts as pkg.sub."""
    found = []
    for node in runtime_nodes(module.tree):
        if isinstance(node, ast.Import):
            found += [Import(a.name, None, node.lineno) for a in node.names if a.name in modules]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    found.append(Import(sub, None, node.lineno))
                elif source in modules:
                    found.append(Import(source, alias.name, node.lineno))
    return found


# --------------------------------------------------------------------------- rules

def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each module that lies on a cycle, duplicates (rotations) removed."""
    cycles, seen = [], set()
    for start in sorted(graph):
        # breadth-first search back to `start`, so the chain printed is the shortest one
        parents: dict[str, str] = {}
        queue = deque([start])
        found = None
        while queue and found is None:
            node = queue.popleft()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    found = node
                    break
                if nxt not in parents:
                    parents[nxt] = node
                    queue.append(nxt)
        if found is None:
            continue
        chain = [found]
        while chain[-1] != start:
            chain.append(parents[chain[-1]])
        chain.reverse()
        key = frozenset(chain)
        if key not in seen:
            seen.add(key)
            cycles.append(chain + [start])
    return cycles


def check_cycles(modules: dict[str, Module], report: Report) -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], int] = {}
    for module in modules.values():
        for imp in imports_of(module, modules):
            if imp.target != module.name:
                graph[module.name].add(imp.target)
                where.setdefault((module.name, imp.target), imp.line)
    for chain in _cycles(graph):
        report.cycles.append(chain)
        first = modules[chain[0]]
        steps = " -> ".join(f"{a} (line {where[(a, b)]})" for a, b in zip(chain, chain[1:]))
        report.findings.append(Finding("cycles", first.rel, where[(chain[0], chain[1])],
                                       f"import cycle: {steps} -> {chain[-1]}"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _package_of(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _private_module_allowed(importer: Module, target: str) -> bool:
    """A `_private` module may be imported from inside the package that holds it."""
    private_at = [i for i, part in enumerate(target.split(".")) if _private(part)]
    if not private_at:
        return True
    owner = ".".join(target.split(".")[: private_at[0]])
    return importer.name == owner or importer.name.startswith(owner + ".")


def check_private(modules: dict[str, Module], report: Report) -> None:
    for module in modules.values():
        bound: dict[str, str] = {}  # local name -> project module it refers to
        for imp in imports_of(module, modules):
            if not _private_module_allowed(module, imp.target):
                report.findings.append(Finding("private", module.rel, imp.line,
                                               f"imports private module {imp.target}"))
            if imp.name and _private(imp.name) and imp.target != module.name:
                report.findings.append(Finding("private", module.rel, imp.line,
                                               f"imports private name {imp.name} from {imp.target}"))
        for node in runtime_nodes(module.tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(module, node)
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        bound[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules and alias.asname:
                        bound[alias.asname] = alias.name
        for node in runtime_nodes(module.tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and bound[node.value.id] != module.name):
                report.findings.append(Finding(
                    "private", module.rel, node.lineno,
                    f"reaches private name {node.attr} of {bound[node.value.id]}"))


def check_importlib(modules: dict[str, Module], report: Report) -> None:
    for module in modules.values():
        names = set()  # local names bound to importlib.import_module
        for node in runtime_nodes(module.tree):
            if isinstance(node, ast.ImportFrom) and node.module == "importlib":
                names |= {a.asname or a.name for a in node.names if a.name == "import_module"}
        for node in runtime_nodes(module.tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            dynamic = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
                isinstance(func, ast.Name) and (func.id in names or func.id == "__import__"))
            if dynamic:
                report.findings.append(Finding(
                    "importlib", module.rel, node.lineno,
                    "dynamic import (importlib.import_module / __import__): use an explicit table"))


def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, first line, line count) of every function and method, nested ones too."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            yield f"{prefix}{node.name}", node.lineno, node.end_lineno - first + 1
            yield from functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def check_size(modules: dict[str, Module], report: Report, max_lines: int) -> None:
    for module in modules.values():
        for name, line, length in functions(module.tree):
            if report.largest is None or length > report.largest[3]:
                report.largest = (module.rel, line, name, length)
            if length >= max_lines:
                report.findings.append(Finding("size", module.rel, line,
                                               f"function {name} is {length} lines (limit {max_lines - 1})"))


def check(root: Path = DEFAULT_ROOT, max_lines: int = MAX_LINES) -> Report:
    modules = load_modules(Path(root))
    report = Report()
    check_cycles(modules, report)
    check_private(modules, report)
    check_importlib(modules, report)
    check_size(modules, report, max_lines)
    return report


def render(report: Report, root: Path) -> str:
    lines = []
    for rule, title in (("cycles", "import cycles"), ("private", "imports of private names"),
                        ("importlib", "dynamic imports"), ("size", "functions too long")):
        found = report.by_rule(rule)
        lines.append(f"{title}: {len(found) or 'none'}")
        lines += [f"  {f}" for f in sorted(found, key=lambda f: (f.path, f.line))]
    if report.largest:
        rel, line, name, length = report.largest
        lines.append(f"largest function: {name} ({rel}:{line}), {length} lines")
    lines.append(f"{root}: " + ("ok" if report.ok else f"{len(report.findings)} problem(s)"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.layout", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the package directory to check")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES,
                        help="a function this many lines long or longer fails (default %(default)s)")
    args = parser.parse_args(argv)
    if not (args.root / "__init__.py").is_file():
        parser.error(f"{args.root} is not a package directory (no __init__.py)")
    report = check(args.root, args.max_lines)
    print(render(report, args.root))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
