"""False positives of the PII / secret detectors on real prompts that hold (almost) no PII.

Every hit on these public data sets was looked at by hand; those that are genuinely what the
detector targets are listed in tests/data/pii_true_positives.json with the reason. Any other
hit is a false positive. Run with `-s` to see the figures per data set and detector.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.privacy.detectors import Hit, detect, screen_pattern
from pipelines.privacy.normalise import normalise

DATA = Path(__file__).resolve().parents[1] / "data"

# Measured: 0 false positives in 4,790 texts (0.00 %); the threshold leaves room for one or
# two texts of a future data set, not for a detector that starts firing on prose.
MAX_FALSE_POSITIVE_RATE = 0.001
# Measured: 0.90 % of these texts pass the JVM screen (43 of 4,790), 10 of them with a hit.
MAX_SCREEN_PASS_RATE = 0.015
# Before the detectors read normalised text (zero-width characters removed, digits of other
# scripts and look-alike letters mapped, "%40" decoded) and learned the new formats: 0 false-
# positive texts, 43 screen passes. Neither may grow without a look at the new hits.
FALSE_POSITIVE_TEXTS_BEFORE_NORMALISATION = 0
SCREEN_PASSES_BEFORE_NORMALISATION = 43


@dataclass(frozen=True)
class Text:
    dataset: str
    row: str
    text: str


def _xstest() -> Iterator[Text]:
    with (DATA / "xstest" / "xstest_prompts.csv").open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            yield Text("xstest", r["id"], r["prompt"])


def _jailbreak_classification() -> Iterator[Text]:
    path = DATA / "jailbreak_classification" / "jailbreak_dataset_full.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        for i, r in enumerate(csv.DictReader(f)):
            yield Text("jailbreak_classification", str(i), r["prompt"])


def _deepset() -> Iterator[Text]:
    for split in ("train", "test"):
        path = DATA / "deepset_prompt_injections" / f"{split}.jsonl"
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                yield Text("deepset_prompt_injections", f"{split}:{i}", json.loads(line)["text"])


def _openai_moderation() -> Iterator[Text]:
    with gzip.open(
        DATA / "openai_moderation" / "samples-1680.jsonl.gz", "rt", encoding="utf-8"
    ) as f:
        for i, line in enumerate(f):
            yield Text("openai_moderation", str(i), json.loads(line)["prompt"])


DATASETS = {
    "xstest": (_xstest, 450),
    "jailbreak_classification": (_jailbreak_classification, 1998),
    "deepset_prompt_injections": (_deepset, 662),
    "openai_moderation": (_openai_moderation, 1680),
}


@dataclass(frozen=True)
class Scan:
    texts: list[Text]
    hits: list[list[Hit]]
    seconds: float


@pytest.fixture(scope="module")
def scan() -> Scan:
    texts = [t for load, _ in DATASETS.values() for t in load()]
    started = time.perf_counter()
    hits = [detect(t.text) for t in texts]
    return Scan(texts, hits, time.perf_counter() - started)


@pytest.fixture(scope="module")
def allowed() -> set[tuple[str, str, str]]:
    entries = json.loads((DATA / "pii_true_positives.json").read_text(encoding="utf-8"))
    assert all(e["why"].strip() for e in entries), "every allowed hit needs a reason"
    return {(e["dataset"], e["row"], e["detector"]) for e in entries}


def _false_positives(t: Text, hits: list[Hit], allowed: set[tuple[str, str, str]]) -> list[str]:
    return [h.detector for h in hits if (t.dataset, t.row, h.detector) not in allowed]


def test_every_data_set_is_complete(scan: Scan) -> None:
    counts = Counter(t.dataset for t in scan.texts)
    assert counts == {name: n for name, (_, n) in DATASETS.items()}


def test_false_positive_rate_is_below_the_threshold(
    scan: Scan, allowed: set[tuple[str, str, str]]
) -> None:
    screen = re.compile(screen_pattern())
    rows: dict[str, Counter[str]] = {name: Counter() for name in DATASETS}
    by_detector: Counter[tuple[str, str]] = Counter()
    false_texts: list[str] = []
    for t, hits in zip(scan.texts, scan.hits, strict=True):
        c = rows[t.dataset]
        c["texts"] += 1
        c["hits"] += len(hits)
        c["texts with a hit"] += bool(hits)
        c["screen passes"] += bool(screen.search(normalise(t.text)))
        fps = _false_positives(t, hits, allowed)
        c["false-positive texts"] += bool(fps)
        for h in hits:
            kind = "FP" if h.detector in fps else "TP"
            by_detector[(h.detector, kind)] += 1
        if fps:
            false_texts.append(f"{t.dataset} {t.row} {sorted(set(fps))}")

    total = sum(rows.values(), Counter())
    print()
    print(f"{'data set':28} {'texts':>6} {'hits':>5} {'hit txt':>7} {'FP txt':>6} "
          f"{'FP rate':>8} {'screen':>7}")  # fmt: skip
    for name, c in [*rows.items(), ("all", total)]:
        print(
            f"{name:28} {c['texts']:6d} {c['hits']:5d} {c['texts with a hit']:7d} "
            f"{c['false-positive texts']:6d} {c['false-positive texts'] / c['texts']:8.2%} "
            f"{c['screen passes'] / c['texts']:7.2%}"
        )
    print("hits per detector (TP = allow-listed, FP = false positive):")
    for (detector, kind), n in sorted(by_detector.items()):
        print(f"  {detector:16} {kind} {n}")
    print(
        f"detect throughput (pure Python): {len(scan.texts) / scan.seconds:,.0f} texts/s, "
        f"{sum(len(t.text) for t in scan.texts) / scan.seconds / 1e6:.2f} MB/s"
    )
    rate = total["false-positive texts"] / total["texts"]
    assert rate <= MAX_FALSE_POSITIVE_RATE, false_texts
    assert total["screen passes"] / total["texts"] <= MAX_SCREEN_PASS_RATE
    assert total["false-positive texts"] <= FALSE_POSITIVE_TEXTS_BEFORE_NORMALISATION, false_texts
    assert total["screen passes"] <= SCREEN_PASSES_BEFORE_NORMALISATION


def test_cost_of_normalising_before_the_screen(scan: Scan) -> None:
    """Prints what normalisation adds to the screen per text (CPU time, best of 5 rounds)."""
    screen = re.compile(screen_pattern())
    texts = [t.text for t in scan.texts]

    def best(run: Callable[[], object]) -> float:
        rounds = []
        for _ in range(5):
            started = time.process_time()
            run()
            rounds.append(time.process_time() - started)
        return min(rounds) / len(texts) * 1e6

    raw = best(lambda: [screen.search(t) for t in texts])
    normalised = best(lambda: [screen.search(normalise(t)) for t in texts])
    plain = [t for t in texts if t.isascii() and "%" not in t and "&" not in t]
    print(
        f"\nscreen per text: {raw:.1f} us on the raw text, {normalised:.1f} us with "
        f"normalise; {len(plain)} of {len(texts)} texts take the ASCII fast path"
    )
    # Plain ASCII text without "%" or "&" takes the fast path: it is returned as it is.
    assert all(normalise(t) is t for t in plain)


def test_every_allowed_hit_is_still_found(scan: Scan, allowed: set[tuple[str, str, str]]) -> None:
    found = {
        (t.dataset, t.row, h.detector)
        for t, hits in zip(scan.texts, scan.hits, strict=True)
        for h in hits
    }
    assert allowed <= found, sorted(allowed - found)


def test_screen_passes_every_text_with_a_hit(scan: Scan) -> None:
    screen = re.compile(screen_pattern())
    missed = [
        f"{t.dataset} {t.row}"
        for t, hits in zip(scan.texts, scan.hits, strict=True)
        if hits and not screen.search(normalise(t.text))
    ]
    assert missed == []
