#!/usr/bin/env python3
"""Derive labels.csv (labels only, no prompt or response text) from JailbreakBench artifacts.

Usage, from the repository root:

    python tests/data/jailbreakbench/extract.py ARTIFACTS_DIR [--out OUT_CSV]

ARTIFACTS_DIR is the `attack-artifacts/` folder of github.com/JailbreakBench/artifacts
(commit 909e68c), e.g. /work/shared/data/jailbreakbench_artifacts. Each of the 18
`<METHOD>/<attack_type>/<model>.json` files below it becomes 100 rows, one per entry of its
`jailbreaks` list, in sorted file order and then list order:

    method,attack_type,model,index,category,jailbroken,jailbroken_llama_guard1,
    published_attack_success_rate

`method`, `attack_type` and `model` are the path components (the folder name, e.g. "JBC",
not `parameters.method`, which says "JailbreakChat"); `index` is the 0-based position in
`jailbreaks`; booleans are `true` / `false`; `jailbroken_llama_guard1` is empty where the
artifact has no Llama Guard verdict (DSN); `published_attack_success_rate` is
`parameters.attack_success_rate`. Standard library only; the output is byte-for-byte
reproducible: to check the checked-in labels.csv against a copy of the artifacts, run

    python tests/data/jailbreakbench/extract.py ARTIFACTS_DIR --out /tmp/labels.csv
    cmp /tmp/labels.csv tests/data/jailbreakbench/labels.csv

(the test suite checks the extraction itself on a small artifact of its own, since the
artifacts are not part of the repository).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = (
    "method",
    "attack_type",
    "model",
    "index",
    "category",
    "jailbroken",
    "jailbroken_llama_guard1",
    "published_attack_success_rate",
)


def _bool(value: Any, where: str) -> str:
    # Fail loudly rather than turn a null or a string into a label.
    if not isinstance(value, bool):
        raise SystemExit(f"{where}: expected a boolean, got {value!r}")
    return "true" if value else "false"


def extract_rows(artifacts: Path) -> list[dict[str, str]]:
    files = sorted(artifacts.glob("*/*/*.json"), key=lambda p: p.relative_to(artifacts).parts)
    if not files:
        raise SystemExit(f"no <METHOD>/<attack_type>/<model>.json files under {artifacts}")
    rows: list[dict[str, str]] = []
    for path in files:
        method, attack_type, _ = path.relative_to(artifacts).parts
        data = json.loads(path.read_text(encoding="utf-8"))
        params = data["parameters"]
        model = path.stem
        if params["model"] != model or params["attack_type"] != attack_type:
            raise SystemExit(f"{path}: parameters disagree with the path: {params}")
        rate = float(params["attack_success_rate"])
        for i, entry in enumerate(data["jailbreaks"]):
            where = f"{path}[{i}]"
            if entry.get("index", i) != i:
                raise SystemExit(f"{where}: index {entry['index']} is not its position")
            guard = entry.get("jailbroken_llama_guard1")
            rows.append(
                {
                    "method": method,
                    "attack_type": attack_type,
                    "model": model,
                    "index": str(i),
                    "category": entry["category"],
                    "jailbroken": _bool(entry["jailbroken"], where),
                    "jailbroken_llama_guard1": "" if guard is None else _bool(guard, where),
                    "published_attack_success_rate": repr(rate),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", type=Path, help="the attack-artifacts/ folder")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "labels.csv",
        help="output CSV (default: labels.csv next to this script)",
    )
    args = parser.parse_args(argv)
    rows = extract_rows(args.artifacts)
    with args.out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
