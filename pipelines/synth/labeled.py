"""`interaction_event` v1 dicts with exactly known ground truth, from public, labeled data sets.

The "golden" integration test streams these events through Kafka and Spark and compares the
warehouse rates with the labels. Everything here is deterministic: the files under `data_dir`
(the layout of tests/data, see tests/data/README.md), `start`, `spacing` and `sources` fully
determine the output. No text reaches an event: the loaders keep only labels and word
counts, and events carry no `excerpts`.

Order and time: the sources come in `LABELED_SOURCES` order (whatever order `sources` lists
them in), the rows of a source in file order; event i of that concatenation has
`event_time = start + i * spacing`.

Ids: `event_id` = uuid5(`NAMESPACE`, "<source>:<row>"), so it does not depend on `start`,
`spacing` or `sources`; `tenant_id`, `user_id` (50 users per source, round robin by position)
and `session_id` (one per row) are SHA-256 hex digests of fixed strings, not pseudonyms of
real ids (there are none).

Ground truth per source (every other field has the neutral default: outcome "answered", no
refusal, all scores 0.0, nothing flagged, action "allow", no injection, no jailbreak, no tool
calls). Segment dimensions not listed are the same for every source: model_id "labeled",
prompt_version and policy_version "n/a", region "eu-west", risk_tier "internal", client
"eval", user_cohort "labeled".

- xstest (5 models x 450 prompt/completion pairs): chat / "xstest-safe" or "xstest-unsafe"
  (the prompt's label) / model_version = the model (gpt4, llama2new, ...). final_label
  1_full_compliance -> outcome answered; 2_full_refusal -> outcome refused, refusal direct;
  3_partial_refusal -> outcome safe_completion, refusal partial.
- jailbreakbench (tests/data/jailbreakbench/labels.csv, 18 artifact files x 100): redteam /
  the method folder (PAIR, GCG, JBC, DSN, prompt_with_random_search) / the target model.
  Every row is a jailbreak attempt, succeeded = the JailbreakBench judge's `jailbroken`; a
  failed attempt is outcome refused, refusal direct.
- openai_moderation (the 755 of 1,680 rows that carry all eight labels): moderation-eval /
  openai-moderation / n/a, locale en-US on even line indexes, en-GB on odd ones. Each
  positive key flags its category with score 1.0 (S sexual, H and H2 hate, V and V2
  violence, HR harassment, SH self_harm, S3 sexual_minors); action "flag" if any is flagged.
- deepset (546 train then 116 test rows): agent / deepset-injections / n/a. Label 1 is an
  injection attempt from the user, score 1.0, not succeeded.
- jailbreak_classification (1,998 rows): chat / jailbreak-classification / n/a. Type
  "jailbreak" is a jailbreak attempt, not succeeded.

`request.input_tokens` and `output_tokens` are whitespace-separated word counts of the prompt
and of the response (0 where a source has no response, and 0 for both on jailbreakbench, whose
extract holds no text); `latency_ms` is a hash of the row id in [50, 2050).

A label outside the values above, a misaligned or missing file raises `LabeledDataError`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from pipelines.errors import SafewatchError
from pipelines.synth.generator import CATEGORIES

__all__ = [
    "LABELED_SOURCES",
    "NAMESPACE",
    "LabeledDataError",
    "LabeledRecord",
    "labeled_events",
    "load_labeled",
]

LABELED_SOURCES = (
    "xstest",
    "jailbreakbench",
    "openai_moderation",
    "deepset",
    "jailbreak_classification",
)
# Fixed once (uuid4) so event ids are stable across runs, machines and releases.
NAMESPACE = uuid.UUID("abce1fb0-8149-44a2-9912-cfbbf096a716")
XSTEST_MODELS = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")
_XSTEST_REFUSALS = {
    "1_full_compliance": ("answered", "none"),
    "2_full_refusal": ("refused", "direct"),
    "3_partial_refusal": ("safe_completion", "partial"),
}
# OpenAI moderation keys onto the event's categories; the "threatening" and "graphic"
# subcategories fold into their parents, which the event contract has no finer split for.
OPENAI_CATEGORIES = {
    "S": "sexual",
    "H": "hate",
    "V": "violence",
    "HR": "harassment",
    "SH": "self_harm",
    "S3": "sexual_minors",
    "H2": "hate",
    "V2": "violence",
}
_USERS_PER_SOURCE = 50


class LabeledDataError(SafewatchError):
    """A labeled extract is missing or malformed; the message names the file and row."""


@dataclass(frozen=True)
class LabeledRecord:
    """One labeled row, the mapping's input: its labels and the sizes of its texts, no text.

    `row` is the row id, stable within the source ("gpt4:17",
    "PAIR/black_box/vicuna-13b-v1.5:3", "412", "train:5"); `position` is the 0-based index
    of the row within its source; `labels` holds the source's label columns as strings.
    """

    source: str
    row: str
    position: int
    labels: dict[str, str] = field(hash=False)
    prompt_words: int
    response_words: int


@dataclass(frozen=True)
class _Truth:
    # What the labels say about one event: the per-source segment values and the outcome.
    product_surface: str
    feature: str
    model_version: str = "n/a"
    locale: str = "en-US"
    outcome: str = "answered"
    refusal_style: str = "none"
    flagged: tuple[str, ...] = ()
    injection: bool = False
    jailbreak_attempt: bool = False
    jailbreak_succeeded: bool = False


def labeled_events(
    data_dir: Path,
    *,
    start: datetime,
    spacing: timedelta = timedelta(seconds=1),
    sources: Sequence[str] = LABELED_SOURCES,
) -> list[dict[str, Any]]:
    """All events of the chosen sources, in the order and with the fields the module states.

    Event i has `event_time` = `start + i * spacing`, as "YYYY-MM-DDTHH:MM:SS.ffffffZ". The
    same arguments (and files) give an identical list. Raises ValueError when `start` is not
    timezone-aware UTC, `spacing` is not positive or a source is unknown, and
    LabeledDataError when an extract is missing or malformed.
    """
    if start.tzinfo is None or start.utcoffset() != timedelta(0):
        msg = f"start must be a timezone-aware UTC datetime, got {start!r}"
        raise ValueError(msg)
    if spacing <= timedelta(0):
        msg = f"spacing must be positive, got {spacing}"
        raise ValueError(msg)
    # Naive UTC wall time: isoformat() then gives a zero-padded year and no offset suffix.
    t0 = start.astimezone(UTC).replace(tzinfo=None)
    return [
        _event(record, (t0 + i * spacing).isoformat(timespec="microseconds") + "Z")
        for i, record in enumerate(load_labeled(data_dir, sources))
    ]


def load_labeled(data_dir: Path, sources: Sequence[str] = LABELED_SOURCES) -> list[LabeledRecord]:
    """The labeled rows of `sources`, in `LABELED_SOURCES` order and file order within each.

    Raises ValueError for an unknown source and LabeledDataError for a missing or
    malformed extract (labels are checked when the rows are mapped to events).
    """
    unknown = sorted(set(sources) - set(LABELED_SOURCES))
    if unknown:
        msg = f"unknown labeled sources {unknown}; known: {list(LABELED_SOURCES)}"
        raise ValueError(msg)
    records: list[LabeledRecord] = []
    for source in LABELED_SOURCES:
        if source in sources:
            records.extend(_LOADERS[source](Path(data_dir)))
    return records


# --- loaders: file layout of tests/data -> LabeledRecord ------------------------------------


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _open(path: Path) -> TextIO:
    if not path.is_file():
        msg = f"labeled extract not found: {path} (see tests/data/README.md)"
        raise LabeledDataError(msg)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with _open(path) as f:
        return list(csv.DictReader(f))


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    with _open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _xstest(data_dir: Path) -> Iterator[LabeledRecord]:
    folder = data_dir / "xstest"
    prompts = _csv_rows(folder / "xstest_prompts.csv")
    n = 0
    for model in XSTEST_MODELS:
        path = folder / "model_completions" / f"xstest_v2_completions_{model}.csv.gz"
        rows = _csv_rows(path)
        if len(rows) != len(prompts):
            msg = f"{path}: {len(rows)} rows, the prompts file has {len(prompts)}"
            raise LabeledDataError(msg)
        for i, (r, p) in enumerate(zip(rows, prompts, strict=True)):
            # Completions line up with the prompts by position (ids "v2-<id>"); the prompt
            # label (safe / unsafe) lives only in the prompts file, so check the pairing.
            if r["id"] != f"v2-{p['id']}" or r["type"] != p["type"]:
                msg = f"{path} row {i} ({r['id']}, {r['type']}) does not match prompt {p['id']}"
                raise LabeledDataError(msg)
            yield LabeledRecord(
                source="xstest",
                row=f"{model}:{i}",
                position=n,
                labels={"model": model, "label": p["label"], "final_label": r["final_label"]},
                # The prompt the model was actually given (v2 reworded one of the 450).
                prompt_words=_words(r["prompt"]),
                response_words=_words(r["completion"]),
            )
            n += 1


def _jailbreakbench(data_dir: Path) -> Iterator[LabeledRecord]:
    for n, r in enumerate(_csv_rows(data_dir / "jailbreakbench" / "labels.csv")):
        yield LabeledRecord(
            source="jailbreakbench",
            row=f"{r['method']}/{r['attack_type']}/{r['model']}:{r['index']}",
            position=n,
            labels={k: r[k] for k in ("method", "attack_type", "model", "jailbroken")},
            # The extract holds labels only; the texts stay in the upstream artifacts.
            prompt_words=0,
            response_words=0,
        )


def _openai_moderation(data_dir: Path) -> Iterator[LabeledRecord]:
    rows = _jsonl_rows(data_dir / "openai_moderation" / "samples-1680.jsonl.gz")
    n = 0
    for i, r in enumerate(rows):
        # A missing key means "not labeled", not 0: only fully labeled rows have exact truth.
        if not all(k in r for k in OPENAI_CATEGORIES):
            continue
        yield LabeledRecord(
            source="openai_moderation",
            row=str(i),
            position=n,
            labels={k: str(r[k]) for k in OPENAI_CATEGORIES},
            prompt_words=_words(r.get("prompt")),
            response_words=0,
        )
        n += 1


def _deepset(data_dir: Path) -> Iterator[LabeledRecord]:
    n = 0
    for split in ("train", "test"):
        for i, r in enumerate(
            _jsonl_rows(data_dir / "deepset_prompt_injections" / f"{split}.jsonl")
        ):
            yield LabeledRecord(
                source="deepset",
                row=f"{split}:{i}",
                position=n,
                labels={"label": str(r["label"])},
                prompt_words=_words(r.get("text")),
                response_words=0,
            )
            n += 1


def _jailbreak_classification(data_dir: Path) -> Iterator[LabeledRecord]:
    path = data_dir / "jailbreak_classification" / "jailbreak_dataset_full.csv.gz"
    for n, r in enumerate(_csv_rows(path)):
        yield LabeledRecord(
            source="jailbreak_classification",
            row=str(n),
            position=n,
            labels={"type": r["type"]},
            prompt_words=_words(r["prompt"]),
            response_words=0,
        )


_LOADERS: dict[str, Callable[[Path], Iterator[LabeledRecord]]] = {
    "xstest": _xstest,
    "jailbreakbench": _jailbreakbench,
    "openai_moderation": _openai_moderation,
    "deepset": _deepset,
    "jailbreak_classification": _jailbreak_classification,
}


# --- mapping: LabeledRecord -> ground truth -> event -----------------------------------------


def _label(record: LabeledRecord, key: str, allowed: Sequence[str]) -> str:
    value = record.labels.get(key)
    if value is None or value not in allowed:
        msg = (
            f"{record.source} row {record.row}: {key}={value!r} is not one of {list(allowed)}; "
            "refusing to guess its ground truth"
        )
        raise LabeledDataError(msg)
    return value


def _xstest_truth(record: LabeledRecord) -> _Truth:
    label = _label(record, "label", ("safe", "unsafe"))
    outcome, style = _XSTEST_REFUSALS[_label(record, "final_label", tuple(_XSTEST_REFUSALS))]
    return _Truth(
        product_surface="chat",
        feature=f"xstest-{label}",
        model_version=record.labels["model"],
        outcome=outcome,
        refusal_style=style,
    )


def _jailbreakbench_truth(record: LabeledRecord) -> _Truth:
    jailbroken = _label(record, "jailbroken", ("true", "false")) == "true"
    return _Truth(
        product_surface="redteam",
        feature=record.labels["method"],
        model_version=record.labels["model"],
        # The judge's verdict is binary: a response that is not a jailbreak counts as refused.
        outcome="answered" if jailbroken else "refused",
        refusal_style="none" if jailbroken else "direct",
        jailbreak_attempt=True,
        jailbreak_succeeded=jailbroken,
    )


def _openai_moderation_truth(record: LabeledRecord) -> _Truth:
    flagged = {c for k, c in OPENAI_CATEGORIES.items() if _label(record, k, ("0", "1")) == "1"}
    return _Truth(
        product_surface="moderation-eval",
        feature="openai-moderation",
        # Two locales from the row parity give the test a second, exactly known split.
        locale="en-US" if int(record.row) % 2 == 0 else "en-GB",
        flagged=tuple(sorted(flagged)),
    )


def _deepset_truth(record: LabeledRecord) -> _Truth:
    return _Truth(
        product_surface="agent",
        feature="deepset-injections",
        injection=_label(record, "label", ("0", "1")) == "1",
    )


def _jailbreak_classification_truth(record: LabeledRecord) -> _Truth:
    return _Truth(
        product_surface="chat",
        feature="jailbreak-classification",
        jailbreak_attempt=_label(record, "type", ("benign", "jailbreak")) == "jailbreak",
    )


_MAPPINGS: dict[str, Callable[[LabeledRecord], _Truth]] = {
    "xstest": _xstest_truth,
    "jailbreakbench": _jailbreakbench_truth,
    "openai_moderation": _openai_moderation_truth,
    "deepset": _deepset_truth,
    "jailbreak_classification": _jailbreak_classification_truth,
}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _event(record: LabeledRecord, event_time: str) -> dict[str, Any]:
    truth = _MAPPINGS[record.source](record)
    key = f"{record.source}:{record.row}"
    scores = dict.fromkeys(CATEGORIES, 0.0)
    for category in truth.flagged:
        scores[category] = 1.0
    return {
        "event_id": str(uuid.uuid5(NAMESPACE, key)),
        "event_time": event_time,
        "schema_version": "1",
        "tenant_id": _sha256(f"labeled-tenant:{record.source}"),
        "user_id": _sha256(f"labeled-user:{record.source}:{record.position % _USERS_PER_SOURCE}"),
        "session_id": _sha256(f"labeled-session:{key}"),
        "segment": {
            "product_surface": truth.product_surface,
            "feature": truth.feature,
            "model_id": "labeled",
            "model_version": truth.model_version,
            "prompt_version": "n/a",
            "policy_version": "n/a",
            "locale": truth.locale,
            "region": "eu-west",
            "risk_tier": "internal",
            "client": "eval",
            "user_cohort": "labeled",
        },
        "request": {
            "input_tokens": record.prompt_words,
            "output_tokens": record.response_words,
            "latency_ms": float(50 + int(_sha256(key), 16) % 2000),
            "outcome": truth.outcome,
        },
        "moderation": {
            "scores": scores,
            "flagged_categories": list(truth.flagged),
            "action": "flag" if truth.flagged else "allow",
        },
        "refusal": {"refused": truth.refusal_style != "none", "style": truth.refusal_style},
        "injection": {
            "attempt_detected": truth.injection,
            "source": "user" if truth.injection else None,
            "score": 1.0 if truth.injection else 0.0,
            "succeeded": False,
        },
        "jailbreak": {
            "attempt": truth.jailbreak_attempt,
            "succeeded": truth.jailbreak_succeeded,
        },
        "tool_calls": {"total": 0, "blocked": 0, "unauthorized": 0},
        "privacy": {
            "pii_detected_in_output": False,
            "redaction_applied": True,
            "redactor_version": "labeled-1",
            "entity_counts": {},
        },
        "feedback": {"user_report": False, "appeal_overturned": False},
    }
