"""The architecture rule, checked on the import graph: no import cycles, no upward imports between layers.

The graph is built from the source's AST alone (nothing of robench is imported, so the test takes a
fraction of a second and still works when a module would fail to import).

Nodes are the package's modules: ``robench/**`` plus the top-level ``attacks/`` and ``defenses/``
folders, which install as ``robench.attacks`` and ``robench.defenses`` (setup.cfg ``[options]
package_dir``, read here; a package's ``__init__.py`` is the module named after the package).

Edges are every import of a robench module found anywhere in a file:

* at module level (run at import time, including inside ``try:`` blocks and class bodies);
* inside a function or method (a deferred import, run on the first call);
* inside an ``if TYPE_CHECKING:`` block (never run, only read by the type checker).

All three kinds count, for both rules. A deferred or TYPE_CHECKING import is still a dependency of
the design: moving an upward import into a function or behind TYPE_CHECKING hides it from the
interpreter, not from the architecture. Each violation says which kind it is, so the kinds can be
told apart in the report (``python tests/test_layers.py`` also gives the cycle counts with the
TYPE_CHECKING edges left out, and with only the module-level ones).

How an import names its target module:

* relative imports are resolved against the importing module's package;
* ``import a.b.c`` is an edge to ``a.b.c`` (to its longest prefix that is a module, when ``a.b.c``
  is not one);
* ``from X import name`` is an edge to ``X.name`` where ``X.name`` is a module (a submodule of
  package X), otherwise an edge to ``X`` (``from X import *`` is an edge to ``X``);
* the parent packages an import runs implicitly (``import robench.checkpoints.bundle`` first runs
  ``robench/__init__.py`` and ``robench/core/__init__.py``) are *not* edges: counting them would put
  every module in a cycle with the facade.

Layers (``LAYERS``, bottom first) are assigned by module prefix, the longest prefix winning: a prefix
covers the module of that name and all its submodules. The one exception is the bare root package
``robench``: it covers only ``robench/__init__.py`` itself, so a new module that no prefix covers is
reported as unassigned instead of being silently swallowed by the root.

``robench/__init__.py`` is the public facade. It is the top layer, so its own imports (of anything)
are never upward; an import *of* the facade from inside the package is upward (every other layer is
below it), and the facade is a node like any other for the cycle rule: a cycle through it is a real
import-order hazard.

An edge is upward when its source's layer is below its target's layer; imports within one layer are
free (the cycle rule still applies to them).
"""

from __future__ import annotations

import ast
import configparser
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOT_PACKAGE = "robench"

# The layers, bottom first: (layer name, [module prefixes]). Longest prefix wins, so a module of one
# layer could sit inside another layer's package; each layer is its own package today.
LAYERS: list[tuple[str, list[str]]] = [
    # Registry, typed configs, errors, files, provenance, devices, data, the classifier's building blocks.
    ("core", ["robench.core"]),
    # Heads and training losses, registered by name: need only core.
    ("defenses", ["robench.defenses"]),
    # Checkpoint bundles: a model built from its description (a bundle names its defense), trained, imported, saved,
    # loaded.
    ("checkpoints", ["robench.checkpoints"]),
    # Fit on a (defended) model's features.
    ("detectors", ["robench.detectors"]),
    # Adaptive attacks target a defended model and, for C&W-wb, a detector.
    ("attacks", ["robench.attacks"]),
    # Per-sample records and what is computed from them: metrics, worst cases, cascade rules, the KD+BU combiner.
    ("scoring", ["robench.scoring"]),
    # What a run evaluates: threat models, threat files, parameter bounds, the run config.
    ("specs", ["robench.specs"]),
    # Running evaluations: preparation, plan, task functions, backends, driver, runner, suites, sanity checks.
    ("runs", ["robench.runs"]),
    # Run directories, bootstrap, tables, figures, HTML, the regression gate.
    ("report", ["robench.report"]),
    # Applications: the CLI, the demo, the budget sweep.
    ("app", ["robench.cli", "robench.__main__", "robench.app"]),
    # The public facade (robench/__init__.py only; see the module docstring).
    ("facade", ["robench"]),
]

# The package layout when setup.cfg cannot be read: import name -> folder (relative to the repository).
DEFAULT_PACKAGE_DIRS = {"robench": "robench", "robench.attacks": "attacks", "robench.defenses": "defenses"}

MODULE_LEVEL, IN_FUNCTION, TYPE_CHECKING_BLOCK = "module level", "inside a function", "TYPE_CHECKING"


# ---------------------------------------------------------------- modules


def package_dirs(repo: Path = REPO, root: str = ROOT_PACKAGE) -> dict[str, Path]:
    """Import name -> folder, from setup.cfg ``[options] package_dir`` (the defaults when it has none)."""
    mapping = dict(DEFAULT_PACKAGE_DIRS)
    setup_cfg = repo / "setup.cfg"
    if setup_cfg.is_file():
        parser = configparser.ConfigParser()
        parser.read(setup_cfg)
        raw = parser.get("options", "package_dir", fallback="")
        pairs = [line.split("=", 1) for line in raw.splitlines() if "=" in line]
        if pairs:
            mapping = {name.strip(): folder.strip() for name, folder in pairs}
    return {name: repo / folder for name, folder in mapping.items() if name == root or name.startswith(root + ".")}


def find_modules(dirs: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under the package folders."""
    modules: dict[str, Path] = {}
    # Longest import name first, so a folder mapped to its own name is not claimed by its parent's walk.
    claimed: set[Path] = set()
    for name, folder in sorted(dirs.items(), key=lambda item: -len(item[0])):
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder)
            if path in claimed or any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
                continue
            claimed.add(path)
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([name, *parts])] = path
    return modules


# ---------------------------------------------------------------- imports


@dataclass(frozen=True)
class ImportSite:
    """One import of module ``dst`` by module ``src``: where it is and when it runs."""

    src: str
    dst: str
    path: str  # relative to the repository
    line: int
    kind: str  # MODULE_LEVEL, IN_FUNCTION or TYPE_CHECKING_BLOCK
    function: str = ""  # the enclosing function's qualified name, for IN_FUNCTION (and TYPE_CHECKING inside one)

    def where(self) -> str:
        if self.kind == TYPE_CHECKING_BLOCK:
            place = "in an `if TYPE_CHECKING:` block" + (f" inside function {self.function}" if self.function else "")
        elif self.kind == IN_FUNCTION:
            place = f"inside function {self.function}"
        else:
            place = "at module level"
        return f"{self.path}:{self.line}, {place}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: dict[str, Path], root: str, path: str):
        self.module, self.is_package, self.modules, self.root, self.path = module, is_package, modules, root, path
        self.functions: list[str] = []
        self.classes: list[str] = []
        self.type_checking = 0
        self.sites: list[ImportSite] = []
        self.unresolved: list[tuple[str, str]] = []  # (what was imported, where)

    # -- context

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:  # decorators and defaults run where the def is
            self.visit(decorator)
        self.functions.append(".".join([*self.functions[-1:], *self.classes, node.name]))  # the qualified name
        saved_classes, self.classes = self.classes, []
        for statement in node.body:
            self.visit(statement)
        self.classes = saved_classes
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if _is_type_checking(node.test):
            self.type_checking += 1
            for statement in node.body:
                self.visit(statement)
            self.type_checking -= 1
        else:
            for statement in node.body:
                self.visit(statement)
        for statement in node.orelse:  # the else of `if TYPE_CHECKING:` runs
            self.visit(statement)

    # -- imports

    def _in_tree(self, name: str) -> bool:
        return name == self.root or name.startswith(self.root + ".")

    def _known(self, name: str) -> str | None:
        """``name`` if it is a module, else its longest prefix that is one (None: none is)."""
        parts = name.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in self.modules:
                return candidate
            parts.pop()
        return None

    def _add(self, target: str, node: ast.stmt, seen: set[str]) -> None:
        dst = self._known(target)
        if dst is None:
            self.unresolved.append((target, f"{self.path}:{node.lineno}"))
            return
        if dst in seen:
            return
        seen.add(dst)
        if self.type_checking:
            kind = TYPE_CHECKING_BLOCK
        elif self.functions:
            kind = IN_FUNCTION
        else:
            kind = MODULE_LEVEL
        function = self.functions[-1] if self.functions else ""
        self.sites.append(ImportSite(self.module, dst, self.path, node.lineno, kind, function))

    def visit_Import(self, node: ast.Import) -> None:
        seen: set[str] = set()
        for alias in node.names:
            if self._in_tree(alias.name):
                self._add(alias.name, node, seen)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module if self.is_package else self.module.rpartition(".")[0]
            parts = package.split(".")
            if node.level - 1 >= len(parts):
                self.unresolved.append(("." * node.level + (node.module or ""), f"{self.path}:{node.lineno}"))
                return
            base_parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not self._in_tree(base):
            return
        seen: set[str] = set()
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if alias.name != "*" and submodule in self.modules else base, node, seen)


def import_sites(
    modules: dict[str, Path], root: str = ROOT_PACKAGE, repo: Path = REPO
) -> tuple[list[ImportSite], list[tuple[str, str]]]:
    """Every import of a package module by a package module, and the in-package names that resolve to no module."""
    sites: list[ImportSite] = []
    unresolved: list[tuple[str, str]] = []
    for module, path in sorted(modules.items()):
        try:
            shown = str(path.relative_to(repo))
        except ValueError:
            shown = str(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        collector = _ImportCollector(module, path.name == "__init__.py", modules, root, shown)
        collector.visit(tree)
        sites += collector.sites
        unresolved += collector.unresolved
    return sites, unresolved


# ---------------------------------------------------------------- layers and cycles


def _covers(prefix: str, module: str, root: str) -> bool:
    if prefix == root:
        return module == root  # the bare root covers only the facade
    return module == prefix or module.startswith(prefix + ".")


def layer_of(
    module: str, layers: list[tuple[str, list[str]]] = LAYERS, root: str = ROOT_PACKAGE
) -> tuple[int, str] | None:
    """(index from the bottom, layer name) of the longest prefix covering ``module``; None when none does."""
    best: tuple[int, int, str] | None = None
    for index, (name, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if _covers(prefix, module, root) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index, name)
    return None if best is None else (best[1], best[2])


def strongly_connected(nodes: list[str], graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            if successors:
                nxt = successors.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return sorted(components, key=lambda c: (-len(c), c))


def find_cycles(modules: list[str], edges: dict[tuple[str, str], list[ImportSite]]) -> list[list[str]]:
    """The strongly connected components with more than one module, and the modules that import themselves."""
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in edges:
        graph[src].add(dst)
    return [c for c in strongly_connected(sorted(modules), graph) if len(c) > 1 or (c[0], c[0]) in edges]


@dataclass(frozen=True)
class UpwardEdge:
    site: ImportSite
    from_layer: str
    to_layer: str

    def __str__(self) -> str:
        return f"{self.site.src} -> {self.site.dst} (upward: {self.from_layer} < {self.to_layer}), {self.site.where()}"


def analyze(
    repo: Path = REPO,
    layers: list[tuple[str, list[str]]] = LAYERS,
    root: str = ROOT_PACKAGE,
    kinds: frozenset[str] | None = None,
) -> tuple[dict[tuple[str, str], list[ImportSite]], list[list[str]], list[UpwardEdge]]:
    """(edges, cycles, upward_edges) of the package in ``repo``.

    ``edges``: (importer, imported) -> its import sites, one entry per module pair; ``cycles``: see
    :func:`find_cycles`; ``upward_edges``: one per import site whose source's layer is below its target's.
    ``kinds`` keeps only the sites of those kinds (default: all; the rule counts all).
    """
    modules = find_modules(package_dirs(repo, root))
    sites, _ = import_sites(modules, root, repo)
    edges: dict[tuple[str, str], list[ImportSite]] = defaultdict(list)
    for site in sites:
        if kinds is None or site.kind in kinds:
            edges[(site.src, site.dst)].append(site)
    edges = dict(edges)
    cycles = find_cycles(list(modules), edges)
    upward: list[UpwardEdge] = []
    for site_list in edges.values():
        for site in site_list:
            src, dst = layer_of(site.src, layers, root), layer_of(site.dst, layers, root)
            if src is not None and dst is not None and src[0] < dst[0]:
                upward.append(UpwardEdge(site, src[1], dst[1]))
    upward.sort(
        key=lambda u: (
            layer_of(u.site.src, layers, root),
            layer_of(u.site.dst, layers, root),
            u.site.src,
            u.site.dst,
            u.site.line,
        )
    )
    return edges, cycles, upward


# ---------------------------------------------------------------- reports


def shortest_path(
    start: str, goal: str, members: set[str], edges: dict[tuple[str, str], list[ImportSite]]
) -> list[str]:
    """The shortest import path from ``start`` to ``goal`` through ``members`` (breadth first; [] when none)."""
    graph: dict[str, list[str]] = defaultdict(list)
    for src, dst in sorted(edges):
        if src in members and dst in members:
            graph[src].append(dst)
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier and goal not in previous:
        following = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    if goal not in previous:
        return []
    path: list[str] = [goal]
    while previous[path[-1]] is not None:
        path.append(previous[path[-1]])  # type: ignore[arg-type]
    return path[::-1]


def describe_cycles(cycles: list[list[str]], edges: dict[tuple[str, str], list[ImportSite]]) -> str:
    """Each cycle's modules, then every import between two of them, with the shortest way back that it closes."""
    lines = []
    for number, cycle in enumerate(cycles, 1):
        members = set(cycle)
        lines.append(f"cycle {number} ({len(cycle)} modules): {cycle}")
        for (src, dst), sites in sorted(edges.items()):
            if src in members and dst in members:
                back = shortest_path(dst, src, members, edges)
                lines.append(f"    {src} -> {dst}   closes {' -> '.join([src, *back])}")
                lines += [f"        {site.where()}" for site in sites]
    return "\n".join(lines)


def describe_upward(upward: list[UpwardEdge]) -> str:
    groups: dict[tuple[str, str], list[UpwardEdge]] = defaultdict(list)
    for edge in upward:
        groups[(edge.from_layer, edge.to_layer)].append(edge)
    lines = []
    for (low, high), group in groups.items():  # already sorted by layer
        pairs = {(e.site.src, e.site.dst) for e in group}
        lines.append(f"{low} -> {high}: {len(pairs)} module pair(s), {len(group)} import(s)")
        lines += [f"    {edge}" for edge in group]
    return "\n".join(lines)


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def analysis():
    return analyze()


def test_the_graph_is_found():
    """Guards the scanner itself: the three package roots are found and a known import is seen."""
    modules = find_modules(package_dirs())
    assert {"robench", "robench.attacks", "robench.defenses", "robench.checkpoints.bundle"} <= set(modules)
    sites, _ = import_sites(modules)
    assert any(s.src == "robench.attacks.base" and s.dst == "robench.core.registry" for s in sites)


def test_no_import_cycles(analysis):
    edges, cycles, _ = analysis
    if cycles:
        pytest.fail(
            f"{len(cycles)} import cycle(s) between robench modules (each with the imports inside it):\n"
            + describe_cycles(cycles, edges),
            pytrace=False,
        )


def test_no_upward_imports_between_layers(analysis):
    _, _, upward = analysis
    if upward:
        pairs = {(u.site.src, u.site.dst) for u in upward}
        pytest.fail(
            f"{len(pairs)} upward module dependencies ({len(upward)} imports) against the layer order "
            + " < ".join(name for name, _ in LAYERS)
            + ":\n"
            + describe_upward(upward),
            pytrace=False,
        )


def test_every_module_has_a_layer():
    unassigned = sorted(m for m in find_modules(package_dirs()) if layer_of(m) is None)
    assert not unassigned, f"modules no prefix in LAYERS covers (add them to a layer): {unassigned}"


def test_every_layer_prefix_names_modules():
    modules = find_modules(package_dirs())
    stale = [
        (name, prefix)
        for name, prefixes in LAYERS
        for prefix in prefixes
        if not any(_covers(prefix, m, ROOT_PACKAGE) for m in modules)
    ]
    assert not stale, f"LAYERS prefixes that cover no module (a typo, or a package that moved): {stale}"


def test_in_package_imports_resolve():
    _, unresolved = import_sites(find_modules(package_dirs()))
    assert not unresolved, f"imports of robench names that are no module here: {unresolved}"


def test_the_resolver(tmp_path):
    """Relative imports, submodules named by ``from``, deferred and TYPE_CHECKING imports, the layer rule, cycles."""
    files = {
        "pkg/__init__.py": "from pkg.top import run\n",
        "pkg/low/__init__.py": "",
        "pkg/low/a.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import h\nelse:\n    import os\n"
        ),
        "pkg/low/b.py": "from . import a\nfrom .a import thing\ndef f():\n    from ..high import h\n    return h\n",
        "pkg/high/__init__.py": "",
        "pkg/high/h.py": "from pkg.low import b, missing_name\nimport pkg.low.a\n",
        "pkg/top.py": "from pkg.low.b import f\nimport pkg\n",
        "ext/__init__.py": "from pkg.low import a\n",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "setup.cfg").write_text("[options]\npackage_dir =\n    pkg = pkg\n    pkg.ext = ext\n")
    layers = [("low", ["pkg.low", "pkg.ext"]), ("high", ["pkg.high"]), ("top", ["pkg.top"]), ("facade", ["pkg"])]
    edges, cycles, upward = analyze(tmp_path, layers, "pkg")
    got = {(s.src, s.dst, s.line, s.kind) for sites in edges.values() for s in sites}
    assert got == {
        ("pkg", "pkg.top", 1, MODULE_LEVEL),
        ("pkg.low.a", "pkg.high.h", 3, TYPE_CHECKING_BLOCK),
        ("pkg.low.b", "pkg.low.a", 1, MODULE_LEVEL),
        ("pkg.low.b", "pkg.low.a", 2, MODULE_LEVEL),
        ("pkg.low.b", "pkg.high.h", 4, IN_FUNCTION),
        ("pkg.high.h", "pkg.low.b", 1, MODULE_LEVEL),
        ("pkg.high.h", "pkg.low", 1, MODULE_LEVEL),  # missing_name is no submodule: an edge to the package
        ("pkg.high.h", "pkg.low.a", 2, MODULE_LEVEL),
        ("pkg.top", "pkg.low.b", 1, MODULE_LEVEL),
        ("pkg.top", "pkg", 2, MODULE_LEVEL),
        ("pkg.ext", "pkg.low.a", 1, MODULE_LEVEL),
    }
    assert cycles == [["pkg.high.h", "pkg.low.a", "pkg.low.b"], ["pkg", "pkg.top"]]  # largest first
    assert [(u.site.src, u.site.dst, u.from_layer, u.to_layer) for u in upward] == [
        ("pkg.low.a", "pkg.high.h", "low", "high"),
        ("pkg.low.b", "pkg.high.h", "low", "high"),
        ("pkg.top", "pkg", "top", "facade"),
    ]
    assert "inside function f" in str(upward[1]) and "TYPE_CHECKING" in str(upward[0])
    assert layer_of("pkg.other", layers, "pkg") is None  # the bare root covers only itself


# ---------------------------------------------------------------- the figures


def main() -> int:
    modules = find_modules(package_dirs())
    edges, cycles, upward = analyze()
    sites = sum(len(s) for s in edges.values())
    upward_pairs = {(u.site.src, u.site.dst) for u in upward}
    print(f"modules {len(modules)}, edges {len(edges)}, cycles {len(cycles)}, upward edges {len(upward_pairs)}")
    print(f"  (edges and upward edges count module pairs; import sites: {sites} in all, {len(upward)} upward)")
    by_kind = defaultdict(int)
    for site_list in edges.values():
        for site in site_list:
            by_kind[site.kind] += 1
    print(
        "  import sites by kind: "
        + ", ".join(f"{kind} {by_kind[kind]}" for kind in (MODULE_LEVEL, IN_FUNCTION, TYPE_CHECKING_BLOCK))
    )
    upward_by_kind = defaultdict(int)
    for u in upward:
        upward_by_kind[u.site.kind] += 1
    print(
        "  upward imports by kind: "
        + ", ".join(f"{kind} {upward_by_kind[kind]}" for kind in (MODULE_LEVEL, IN_FUNCTION, TYPE_CHECKING_BLOCK))
    )
    for label, kinds in (
        ("without TYPE_CHECKING edges", {MODULE_LEVEL, IN_FUNCTION}),
        ("module-level edges only (import time)", {MODULE_LEVEL}),
    ):
        _, partial, _ = analyze(kinds=frozenset(kinds))
        print(f"  cycles {label}: {len(partial)}" + "".join(f"\n      {c}" for c in partial))
    print("layers, bottom first: " + " < ".join(name for name, _ in LAYERS))
    _, unresolved = import_sites(modules)
    unassigned = sorted(m for m in modules if layer_of(m) is None)
    if unassigned:
        print(f"\nunassigned modules: {unassigned}")
    if unresolved:
        print(f"\nunresolved in-package imports: {unresolved}")
    print(f"\n== cycles ({len(cycles)})")
    print(describe_cycles(cycles, edges) or "none")
    print(f"\n== upward edges ({len(upward_pairs)} module pairs, {len(upward)} imports)")
    print(describe_upward(upward) or "none")
    return 1 if cycles or upward or unassigned else 0


if __name__ == "__main__":
    sys.exit(main())
