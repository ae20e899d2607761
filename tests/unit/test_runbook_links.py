"""Every alert has a runbook, every runbook belongs to an alert, and runbooks share one shape.

Alerts are the safety rules of alerts/rules/*.yaml (field `runbook`) and the pipeline alerts
of alerts/prometheus/*.rules.yml (annotation `runbook_url`), each `runbooks/<name>.md`. A
runbook has exactly the six sections of `SECTIONS`, in order; its Triage holds numbered
steps with at least one SQL block; every ```sql block is preceded, on the line just before
its fence, by a machine-readable expectation:

    <!-- expect: columns=window_start,violations,events,violation_rate; rows>=1 -->

The SQL must run unchanged on SQLite and PostgreSQL with the named binds of `BINDS` only;
tests/integration/test_runbooks.py runs every block on both against the scenario warehouse
and checks the expectation. The parsing helpers below are shared with that test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipelines.alerting.loader import load_rules

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS_DIR = REPO_ROOT / "runbooks"
RULES_DIR = REPO_ROOT / "alerts" / "rules"
PROMETHEUS_DIR = REPO_ROOT / "alerts" / "prometheus"
SECTIONS = (
    "What fired and why it matters",
    "Severity and who is paged",
    "Triage",
    "Containment",
    "Escalation",
    "Resolution and follow-up",
)
BINDS = frozenset({"product_surface", "model_version", "locale", "since", "until", "rule"})
# Dialect-specific syntax the runbooks must not use (they run on SQLite and PostgreSQL).
NOT_PORTABLE = {
    r"\bINTERVAL\b": "INTERVAL",
    r"::": "a :: cast",
    r"\b(datetime|julianday|strftime|date_trunc|now|ifnull|iif|to_char|extract)\s*\(": (
        "a dialect-specific function"
    ),
    r"\bILIKE\b": "ILIKE",
    r"\bCURRENT_TIMESTAMP\b": "CURRENT_TIMESTAMP (use :since/:until)",
}
_EXPECT = re.compile(
    r"^<!--\s*expect:\s*columns=(?P<columns>[a-z_][a-z0-9_]*(?:,[a-z_][a-z0-9_]*)*)\s*;"
    r"\s*rows\s*(?P<op>>=|==|<=)\s*(?P<n>\d+)\s*-->$"
)
# SQLAlchemy's own rule for binds in text(): it does not skip string literals or comments,
# so a time such as '10:30' in a literal would be a bind too; the check below catches it.
_BIND = re.compile(r"(?<![:\w\x5c]):(\w+)(?![:\w])")
_FENCE_OPEN = re.compile(r"^(?P<indent>\s*)```sql\s*$")
_FENCE_CLOSE = re.compile(r"^\s*```\s*$")


@dataclass(frozen=True)
class Expectation:
    columns: tuple[str, ...]
    op: str  # ">=", "==" or "<="
    rows: int

    def holds(self, rows: int) -> bool:
        return {">=": rows >= self.rows, "==": rows == self.rows, "<=": rows <= self.rows}[self.op]

    def __str__(self) -> str:
        return f"columns={','.join(self.columns)}; rows{self.op}{self.rows}"


@dataclass(frozen=True)
class SqlBlock:
    path: Path
    line: int  # 1-based line of the ```sql fence
    section: str | None  # the H2 it is under
    sql: str
    expect_comment: str | None  # the line just before the fence, stripped

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"

    def expectation(self) -> Expectation:
        """The parsed comment; ValueError naming the block when it is missing or malformed."""
        m = _EXPECT.match(self.expect_comment or "")
        if m is None:
            msg = (
                f"{self.where}: the line before ```sql must be "
                "<!-- expect: columns=a,b; rows>=N --> (or rows==N, rows<=N), got "
                f"{self.expect_comment!r}"
            )
            raise ValueError(msg)
        return Expectation(tuple(m["columns"].split(",")), m["op"], int(m["n"]))

    def binds(self) -> set[str]:
        return set(_BIND.findall(self.sql))


def _without_strings_and_comments(sql: str) -> str:
    sql = re.sub(r"'(?:[^']|'')*'", "''", sql)
    return re.sub(r"--[^\n]*", "", sql)


def headings(path: Path) -> list[str]:
    """The H2 headings of a Markdown file, outside code fences."""
    found, fenced = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            found.append(line[3:].strip())
    return found


def sql_blocks(path: Path) -> list[SqlBlock]:
    """Every ```sql block of a runbook, with its line, section and expectation comment."""
    lines = path.read_text().splitlines()
    blocks: list[SqlBlock] = []
    section: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        opened = _FENCE_OPEN.match(line)
        if opened is None:
            i += 1
            continue
        indent = len(opened["indent"])
        body = []
        j = i + 1
        while j < len(lines) and not _FENCE_CLOSE.match(lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j].lstrip())
            j += 1
        if j == len(lines):
            msg = f"{path}:{i + 1}: ```sql block is never closed"
            raise ValueError(msg)
        before = lines[i - 1].strip() if i > 0 else None
        blocks.append(SqlBlock(path, i + 1, section, "\n".join(body).strip(), before))
        i = j + 1
    return blocks


def runbook_files() -> list[Path]:
    return sorted(RUNBOOKS_DIR.glob("*.md"))


def safety_rules() -> list:
    return load_rules([RULES_DIR])


def prometheus_alerts() -> list[tuple[Path, dict]]:
    """(file, rule) for every alerting rule of alerts/prometheus/*.rules.yml."""
    return [
        (path, rule)
        for path in sorted(PROMETHEUS_DIR.glob("*.rules.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def alert_runbooks() -> dict[str, str]:
    """Alert name -> the runbook it points at, as written (rules and Prometheus alerts)."""
    found = {r.name: r.runbook for r in safety_rules()}
    for _, rule in prometheus_alerts():
        found.setdefault(rule["alert"], rule.get("annotations", {}).get("runbook_url", ""))
    return found


# -- tests --------------------------------------------------------------------------------


def test_every_rule_points_at_its_runbook():
    for rule in safety_rules():
        assert rule.runbook == f"runbooks/{rule.name}.md", f"{rule.path}:{rule.line}"
        assert (REPO_ROOT / rule.runbook).is_file(), f"{rule.path}:{rule.line}: {rule.runbook}"


def test_every_prometheus_alert_points_at_its_runbook():
    assert prometheus_alerts()
    for path, rule in prometheus_alerts():
        url = rule.get("annotations", {}).get("runbook_url")
        assert url == f"runbooks/{rule['alert']}.md", f"{path.name}: {rule['alert']}"
        assert (REPO_ROOT / url).is_file(), f"{path.name}: {rule['alert']}: {url}"


def test_every_runbook_belongs_to_an_alert():
    used = {(REPO_ROOT / link).resolve() for link in alert_runbooks().values()}
    unused = [p.name for p in runbook_files() if p.resolve() not in used]
    assert not unused, f"runbooks no rule or alert points at: {unused}"


@pytest.mark.parametrize("path", runbook_files(), ids=lambda p: p.name)
def test_runbook_has_the_six_sections_in_order(path):
    assert tuple(headings(path)) == SECTIONS


@pytest.mark.parametrize("path", runbook_files(), ids=lambda p: p.name)
def test_triage_is_numbered_steps_with_sql(path):
    blocks = sql_blocks(path)
    assert any(b.section == "Triage" for b in blocks), f"{path.name}: no SQL block in Triage"
    text = path.read_text()
    triage = text.split("\n## Triage\n", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^1\. ", triage, re.M), f"{path.name}: Triage has no numbered steps"


@pytest.mark.parametrize("path", runbook_files(), ids=lambda p: p.name)
def test_every_sql_block_has_an_expectation_and_portable_sql(path):
    blocks = sql_blocks(path)
    assert blocks
    for block in blocks:
        expectation = block.expectation()  # raises, naming the block, when malformed
        assert len(set(expectation.columns)) == len(expectation.columns), block.where
        unknown = block.binds() - BINDS
        assert not unknown, f"{block.where}: binds {sorted(unknown)}; allowed {sorted(BINDS)}"
        code = _without_strings_and_comments(block.sql)
        for pattern, what in NOT_PORTABLE.items():
            assert not re.search(pattern, code, re.I), f"{block.where}: uses {what}"
        assert ";" not in code.rstrip().rstrip(";"), f"{block.where}: one statement per block"


def test_expectation_comments_parse_as_documented():
    path = RUNBOOKS_DIR / "x.md"
    good = SqlBlock(path, 3, "Triage", "SELECT 1", "<!-- expect: columns=a,b_c; rows>=1 -->")
    assert good.expectation() == Expectation(("a", "b_c"), ">=", 1)
    assert good.expectation().holds(1) and not good.expectation().holds(0)
    assert Expectation(("a",), "==", 1).holds(1) and not Expectation(("a",), "<=", 2).holds(3)
    for bad in (None, "<!-- expect: rows>=1 -->", "<!-- expect: columns=a; rows>1 -->"):
        with pytest.raises(ValueError, match="x.md:3"):
            SqlBlock(path, 3, "Triage", "SELECT 1", bad).expectation()


def test_sql_blocks_are_found_with_their_line_and_section(tmp_path):
    md = tmp_path / "r.md"
    md.write_text(
        "# R\n\n## Triage\n\n1. Step:\n\n   <!-- expect: columns=n; rows==1 -->\n"
        "   ```sql\n   SELECT COUNT(*) AS n\n   FROM t WHERE a = :locale AND b = '::x';\n   ```\n"
    )
    (block,) = sql_blocks(md)
    assert (block.line, block.section) == (8, "Triage")
    assert block.sql == "SELECT COUNT(*) AS n\nFROM t WHERE a = :locale AND b = '::x';"
    assert block.binds() == {"locale"}
