"""The imports follow the layers written down in docs/architecture.md: no arrow from a lower
layer to a higher one, no import circle between modules, nothing outside a layer. The layer
table is read from the document itself, so the document and the code cannot drift apart.

Every import counts, also one inside a function: it is a dependency all the same.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("pipelines", "jobs", "schemas")


def layers() -> dict[str, int]:
    """Package -> layer number, from the table of docs/architecture.md."""
    found: dict[str, int] = {}
    for line in (REPO / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        row = re.match(r"\|\s*(\d+)\. [^|]*\|([^|]*)\|", line)
        if row:
            for name in re.findall(r"`([\w.]+)`", row.group(2)):
                found[name] = int(row.group(1))
    return found


def modules() -> dict[str, Path]:
    found = {}
    for root in ROOTS:
        for path in (REPO / root).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, roots: tuple[str, ...] = ROOTS) -> set[str]:
    """Every module name of `roots` that `path` imports (`from a.b import c` counts as a.b
    and a.b.c).
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.split(".")[0] in roots}


def package_of(module: str, known: dict[str, int]) -> str | None:
    """The longest entry of the layer table that `module` is, or lies in."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in known:
            return ".".join(parts[:i])
    return None


def test_every_package_has_a_layer() -> None:
    known = layers()
    assert known, "no layer table found in docs/architecture.md"
    missing = sorted({m for m in modules() if package_of(m, known) is None and m not in ROOTS})
    assert not missing, f"modules in no layer of docs/architecture.md: {missing}"
    stale = sorted(p for p in known if not any(m == p or m.startswith(p + ".") for m in modules()))
    assert not stale, f"docs/architecture.md names packages that do not exist: {stale}"


def test_no_import_points_to_a_higher_layer() -> None:
    known = layers()
    upward = []
    for module, path in sorted(modules().items()):
        source = package_of(module, known)
        if source is None:
            continue
        for name in sorted(imports(path)):
            target = package_of(name, known)
            if target is not None and known[target] > known[source]:
                upward.append(f"{module} -> {name} (layer {known[source]} -> {known[target]})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_no_import_circle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    mods = modules()
    for module, path in mods.items():
        graph[module] = {n for n in imports(path) if n in mods and n != module}
    # Tarjan's strongly connected components; a component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(mods):
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The import reader finds imports inside functions, as the layer check relies on."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from pipelines.report.text import format_table\n")
    assert imports(path) == {"pipelines.report.text", "pipelines.report.text.format_table"}
    known = layers()
    assert known[package_of("pipelines.report.text", known)] > known["pipelines.warehouse"]


# -- rooms of one idea, entry points that only wire ------------------------------------------

MAX_MODULE_LINES = 600
# What building SQL or Spark transformations takes: never in an entry point.
STATEMENTS = {f"sqlalchemy.{n}" for n in ("select", "insert", "update", "delete", "text", "func")}
TRANSFORMS = {"pyspark.sql.functions", "pyspark.sql.types"}


def test_no_module_is_over_the_size_of_one_idea() -> None:
    big = {
        name: n
        for name, path in modules().items()
        if name.startswith(("pipelines", "jobs"))
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split them by idea): {big}"


def sql_or_spark(path: Path) -> list[str]:
    """What `path` imports to build SQL or Spark transformations, and the statements it
    executes on a connection.
    """
    found = sorted(imports(path, ("sqlalchemy", "pyspark")) & (STATEMENTS | TRANSFORMS))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "execute":
                found.append(f"line {node.lineno}: .execute(…)")
    return found


def test_entry_points_only_parse_wire_and_print() -> None:
    found = {
        name: what
        for name, path in modules().items()
        if name.startswith("jobs") and (what := sql_or_spark(path))
    }
    assert not found, f"SQL or Spark transformations in jobs/ (move them to pipelines/): {found}"


def test_the_entry_point_check_sees_sql(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        "def f(conn):\n    from sqlalchemy import select\n    conn.execute(select(1))\n"
        "from pyspark.sql import functions as F\n"
    )
    assert sql_or_spark(path) == [
        "pyspark.sql.functions",
        "sqlalchemy.select",
        "line 3: .execute(…)",
    ]
