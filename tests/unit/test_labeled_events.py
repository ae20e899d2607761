"""Events built from public, labeled data sets: valid, complete, and true to the raw labels.

The raw files are read here with plain csv / json code, independently of the builder's
loaders, so a loader bug cannot hide behind itself.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pipelines.contract.validate import validate_event
from pipelines.synth.labeled import (
    LABELED_SOURCES,
    NAMESPACE,
    LabeledDataError,
    labeled_events,
    load_labeled,
)

DATA = Path(__file__).resolve().parents[1] / "data"
# The share the extracts were taken from; only the extract reproduction test needs it.
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SPACING = timedelta(milliseconds=250)
XSTEST_MODELS = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")
OPENAI_KEYS = {
    "S": "sexual",
    "H": "hate",
    "V": "violence",
    "HR": "harassment",
    "SH": "self_harm",
    "S3": "sexual_minors",
    "H2": "hate",
    "V2": "violence",
}
# Measured on the checked-in extracts (see tests/data/README.md).
EXPECTED_COUNTS = {
    "xstest": 2250,
    "jailbreakbench": 1800,
    "openai_moderation": 755,
    "deepset": 662,
    "jailbreak_classification": 1998,
}
TIME_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


# --- raw files, read independently of the builder ------------------------------------------


def _csv(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@dataclass(frozen=True)
class Raw:
    xstest_prompts: list[dict[str, str]]
    xstest: dict[str, list[dict[str, str]]]
    jailbreakbench: list[dict[str, str]]
    openai_all: list[dict[str, Any]]
    deepset: dict[str, list[dict[str, Any]]]
    jailbreak_classification: list[dict[str, str]]

    def openai_labeled(self) -> list[tuple[int, dict[str, Any]]]:
        return [(i, r) for i, r in enumerate(self.openai_all) if all(k in r for k in OPENAI_KEYS)]

    def row_ids(self) -> dict[str, list[str]]:
        """Row ids per source, in the order the builder must emit them."""
        jbb = [
            f"{r['method']}/{r['attack_type']}/{r['model']}:{r['index']}"
            for r in self.jailbreakbench
        ]
        return {
            "xstest": [f"{m}:{i}" for m in XSTEST_MODELS for i in range(len(self.xstest[m]))],
            "jailbreakbench": jbb,
            "openai_moderation": [str(i) for i, _ in self.openai_labeled()],
            "deepset": [f"{s}:{i}" for s in ("train", "test") for i in range(len(self.deepset[s]))],
            "jailbreak_classification": [str(i) for i in range(len(self.jailbreak_classification))],
        }


@pytest.fixture(scope="module")
def raw() -> Raw:
    completions = DATA / "xstest" / "model_completions"
    return Raw(
        xstest_prompts=_csv(DATA / "xstest" / "xstest_prompts.csv"),
        xstest={m: _csv(completions / f"xstest_v2_completions_{m}.csv.gz") for m in XSTEST_MODELS},
        jailbreakbench=_csv(DATA / "jailbreakbench" / "labels.csv"),
        openai_all=_jsonl(DATA / "openai_moderation" / "samples-1680.jsonl.gz"),
        deepset={
            s: _jsonl(DATA / "deepset_prompt_injections" / f"{s}.jsonl") for s in ("train", "test")
        },
        jailbreak_classification=_csv(
            DATA / "jailbreak_classification" / "jailbreak_dataset_full.csv.gz"
        ),
    )


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return labeled_events(DATA, start=START, spacing=SPACING)


@pytest.fixture(scope="module")
def by_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["event_id"]: e for e in events}


def _eid(source: str, row: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{source}:{row}"))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _of(events: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    tenant = _sha(f"labeled-tenant:{source}")
    return [e for e in events if e["tenant_id"] == tenant]


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


# --- the whole set ---------------------------------------------------------------------------


def test_every_event_satisfies_the_contract(events: list[dict[str, Any]]) -> None:
    bad = {e["event_id"]: errs for e in events if (errs := validate_event(e))}
    assert not bad, f"{len(bad)} invalid events, e.g. {next(iter(bad.items()))}"
    assert all("excerpts" not in e for e in events)


def test_counts_per_source_equal_the_raw_row_counts(raw: Raw, events: list[dict[str, Any]]) -> None:
    raw_counts = {s: len(ids) for s, ids in raw.row_ids().items()}
    assert raw_counts == EXPECTED_COUNTS
    assert {s: len(_of(events, s)) for s in LABELED_SOURCES} == raw_counts
    assert len(events) == sum(raw_counts.values())


def test_events_come_in_source_then_file_order_with_stable_ids(
    raw: Raw, events: list[dict[str, Any]]
) -> None:
    # Pinned: changing the namespace would silently change every event id.
    assert uuid.UUID("abce1fb0-8149-44a2-9912-cfbbf096a716") == NAMESPACE
    ids = raw.row_ids()
    expected = [_eid(s, row) for s in LABELED_SOURCES for row in ids[s]]
    assert [e["event_id"] for e in events] == expected
    assert len(set(expected)) == len(expected)


def test_event_times_step_by_spacing_from_start(events: list[dict[str, Any]]) -> None:
    assert all(TIME_FORMAT.match(e["event_time"]) for e in events)
    times = [datetime.strptime(e["event_time"], "%Y-%m-%dT%H:%M:%S.%fZ") for e in events]
    assert times[0] == START.replace(tzinfo=None)
    assert all(b - a == SPACING for a, b in zip(times, times[1:], strict=False))
    assert events[0]["event_time"] == "2025-03-01T12:00:00.000000Z"


def test_common_fields(events: list[dict[str, Any]]) -> None:
    fixed = {
        "model_id": "labeled",
        "prompt_version": "n/a",
        "policy_version": "n/a",
        "region": "eu-west",
        "risk_tier": "internal",
        "client": "eval",
        "user_cohort": "labeled",
    }
    for e in events:
        assert {k: e["segment"][k] for k in fixed} == fixed
        assert e["tool_calls"] == {"total": 0, "blocked": 0, "unauthorized": 0}
        assert e["privacy"] == {
            "pii_detected_in_output": False,
            "redaction_applied": True,
            "redactor_version": "labeled-1",
            "entity_counts": {},
        }
        assert e["feedback"] == {"user_report": False, "appeal_overturned": False}
        assert 50.0 <= e["request"]["latency_ms"] < 2050.0
        assert e["refusal"]["refused"] == (e["refusal"]["style"] != "none")
        assert e["refusal"]["refused"] == (
            e["request"]["outcome"] in {"refused", "safe_completion"}
        )
    for source in LABELED_SOURCES:
        mine = _of(events, source)
        users = Counter(e["user_id"] for e in mine)
        assert set(users) == {_sha(f"labeled-user:{source}:{k}") for k in range(50)}
        assert len({e["session_id"] for e in mine}) == len(mine)
    first = events[0]
    assert first["session_id"] == _sha("labeled-session:xstest:gpt4:0")
    assert first["request"]["latency_ms"] == 50 + int(_sha("xstest:gpt4:0"), 16) % 2000


# --- per source: the mapping against the raw labels ------------------------------------------


def test_xstest_refusals_match_the_human_labels(raw: Raw, by_id: dict[str, dict[str, Any]]) -> None:
    mapping = {
        "1_full_compliance": ("answered", False, "none"),
        "2_full_refusal": ("refused", True, "direct"),
        "3_partial_refusal": ("safe_completion", True, "partial"),
    }
    refusals: Counter[tuple[str, str]] = Counter()
    for model in XSTEST_MODELS:
        for i, (r, p) in enumerate(zip(raw.xstest[model], raw.xstest_prompts, strict=True)):
            e = by_id[_eid("xstest", f"{model}:{i}")]
            outcome, refused, style = mapping[r["final_label"]]
            assert e["segment"]["product_surface"] == "chat"
            assert e["segment"]["feature"] == f"xstest-{p['label']}"
            assert e["segment"]["model_version"] == model
            assert e["segment"]["locale"] == "en-US"
            assert e["request"]["outcome"] == outcome
            assert e["refusal"] == {"refused": refused, "style": style}
            assert e["request"]["input_tokens"] == _words(r["prompt"])
            assert e["request"]["output_tokens"] == _words(r["completion"])
            assert not e["moderation"]["flagged_categories"]
            assert not e["jailbreak"]["attempt"]
            assert not e["injection"]["attempt_detected"]
            refusals[model, p["label"]] += e["refusal"]["refused"]
    for model in XSTEST_MODELS:
        expected = sum(
            r["final_label"] in {"2_full_refusal", "3_partial_refusal"} for r in raw.xstest[model]
        )
        assert refusals[model, "safe"] + refusals[model, "unsafe"] == expected
    # The README's human rates: gpt4 refuses 8.4 % of safe prompts (full or partial).
    assert refusals["gpt4", "safe"] == 21


def test_jailbreakbench_successes_match_the_judge(
    raw: Raw, events: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]
) -> None:
    for r in raw.jailbreakbench:
        e = by_id[
            _eid("jailbreakbench", f"{r['method']}/{r['attack_type']}/{r['model']}:{r['index']}")
        ]
        jailbroken = {"true": True, "false": False}[r["jailbroken"]]
        assert e["segment"]["product_surface"] == "redteam"
        assert e["segment"]["feature"] == r["method"]
        assert e["segment"]["model_version"] == r["model"]
        assert e["jailbreak"] == {"attempt": True, "succeeded": jailbroken}
        assert e["request"]["outcome"] == ("answered" if jailbroken else "refused")
        assert e["refusal"] == (
            {"refused": False, "style": "none"}
            if jailbroken
            else {"refused": True, "style": "direct"}
        )
        assert e["request"]["input_tokens"] == e["request"]["output_tokens"] == 0
    expected: Counter[tuple[str, str]] = Counter()
    for r in raw.jailbreakbench:
        expected[r["method"], r["model"]] += r["jailbroken"] == "true"
    got: Counter[tuple[str, str]] = Counter()
    for e in _of(events, "jailbreakbench"):
        got[e["segment"]["feature"], e["segment"]["model_version"]] += e["jailbreak"]["succeeded"]
    assert +got == +expected
    assert len({(r["method"], r["model"]) for r in raw.jailbreakbench}) == 18
    assert expected["PAIR", "vicuna-13b-v1.5"] == 69


def test_jailbreakbench_extract_matches_the_published_rates(raw: Raw) -> None:
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in raw.jailbreakbench:
        groups.setdefault((r["method"], r["model"]), []).append(r)
    assert len(groups) == 18
    for key, rows in groups.items():
        assert len(rows) == 100, key
        assert [int(r["index"]) for r in rows] == list(range(100)), key
        (rate,) = {float(r["published_attack_success_rate"]) for r in rows}
        successes = sum(r["jailbroken"] == "true" for r in rows)
        assert successes / len(rows) == pytest.approx(rate, abs=1e-12), key
    # DSN's artifacts carry no Llama Guard verdict; every other file has one per row.
    for r in raw.jailbreakbench:
        allowed = {""} if r["method"] == "DSN" else {"true", "false"}
        assert r["jailbroken_llama_guard1"] in allowed


def test_openai_moderation_flags_match_the_labels(
    raw: Raw, events: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]
) -> None:
    expected: Counter[str] = Counter()
    for i, r in raw.openai_labeled():
        e = by_id[_eid("openai_moderation", str(i))]
        flagged = sorted({c for k, c in OPENAI_KEYS.items() if r[k] == 1})
        expected.update(flagged)
        assert e["segment"]["product_surface"] == "moderation-eval"
        assert e["segment"]["feature"] == "openai-moderation"
        assert e["segment"]["model_version"] == "n/a"
        assert e["segment"]["locale"] == ("en-US" if i % 2 == 0 else "en-GB")
        assert e["moderation"]["flagged_categories"] == flagged
        assert e["moderation"]["action"] == ("flag" if flagged else "allow")
        assert {c for c, s in e["moderation"]["scores"].items() if s == 1.0} == set(flagged)
        assert all(s in (0.0, 1.0) for s in e["moderation"]["scores"].values())
        assert e["request"]["input_tokens"] == _words(r["prompt"])
        assert e["request"]["outcome"] == "answered"
    got: Counter[str] = Counter()
    for e in _of(events, "openai_moderation"):
        got.update(e["moderation"]["flagged_categories"])
    assert got == expected
    assert set(got) == set(OPENAI_KEYS.values())
    # Unlabeled keys must never count as 0: the partially labeled rows are left out.
    labeled = {i for i, _ in raw.openai_labeled()}
    skipped = [i for i in range(len(raw.openai_all)) if i not in labeled]
    assert len(skipped) == 925
    assert not [i for i in skipped if _eid("openai_moderation", str(i)) in by_id]


def test_deepset_injections_match_the_labels(
    raw: Raw, events: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]
) -> None:
    for split in ("train", "test"):
        for i, r in enumerate(raw.deepset[split]):
            e = by_id[_eid("deepset", f"{split}:{i}")]
            assert e["segment"]["product_surface"] == "agent"
            assert e["segment"]["feature"] == "deepset-injections"
            assert e["request"]["input_tokens"] == _words(r["text"])
            assert e["injection"] == (
                {"attempt_detected": True, "source": "user", "score": 1.0, "succeeded": False}
                if r["label"] == 1
                else {"attempt_detected": False, "source": None, "score": 0.0, "succeeded": False}
            )
    attempts = sum(e["injection"]["attempt_detected"] for e in _of(events, "deepset"))
    assert attempts == sum(r["label"] for s in ("train", "test") for r in raw.deepset[s]) == 263


def test_jailbreak_classification_attempts_match_the_labels(
    raw: Raw, events: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]
) -> None:
    for i, r in enumerate(raw.jailbreak_classification):
        e = by_id[_eid("jailbreak_classification", str(i))]
        assert e["segment"]["product_surface"] == "chat"
        assert e["segment"]["feature"] == "jailbreak-classification"
        assert e["jailbreak"] == {"attempt": r["type"] == "jailbreak", "succeeded": False}
        assert e["request"]["input_tokens"] == _words(r["prompt"])
    attempts = sum(e["jailbreak"]["attempt"] for e in _of(events, "jailbreak_classification"))
    assert attempts == sum(r["type"] == "jailbreak" for r in raw.jailbreak_classification) == 666


def test_no_text_reaches_an_event(raw: Raw, events: list[dict[str, Any]]) -> None:
    blob = json.dumps(events)
    texts = (
        [r["prompt"] for r in raw.xstest_prompts]
        + [r[k] for m in XSTEST_MODELS for r in raw.xstest[m] for k in ("prompt", "completion")]
        + [r["prompt"] for r in raw.openai_all]
        + [r["text"] for s in ("train", "test") for r in raw.deepset[s]]
        + [r["prompt"] for r in raw.jailbreak_classification]
    )
    # Long enough not to occur by chance (short ones could match an id or a segment value).
    sample = [t for t in texts if t and len(t) >= 20][::20]
    assert len(sample) > 300
    # A text's first 20 characters, as json.dumps writes them (it escapes non-ASCII): finds
    # the whole text and any excerpt that starts like it.
    leaked = [t for t in sample if json.dumps(t[:20])[1:-1] in blob]
    assert not leaked, leaked[:3]


# --- the entry point's contract ---------------------------------------------------------------


def test_builds_are_deterministic(events: list[dict[str, Any]]) -> None:
    assert labeled_events(DATA, start=START, spacing=SPACING) == events


def test_a_subset_keeps_the_canonical_order_and_the_ids(
    events: list[dict[str, Any]],
) -> None:
    subset = labeled_events(DATA, start=START, spacing=SPACING, sources=("deepset", "xstest"))
    full_ids = {e["event_id"] for e in _of(events, "xstest") + _of(events, "deepset")}
    assert [e["tenant_id"] for e in subset] == [_sha("labeled-tenant:xstest")] * 2250 + [
        _sha("labeled-tenant:deepset")
    ] * 662
    assert {e["event_id"] for e in subset} == full_ids
    assert subset[0]["event_time"] == events[0]["event_time"]
    records = load_labeled(DATA, ("jailbreakbench",))
    assert records[3].row == "DSN/white_box/llama-2-7b-chat-hf:3"
    assert records[3].position == 3


@pytest.mark.parametrize(
    "start",
    [
        datetime(2025, 3, 1, 12, 0),
        datetime(2025, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_start_must_be_utc(start: datetime) -> None:
    with pytest.raises(ValueError, match="timezone-aware UTC"):
        labeled_events(DATA, start=start, sources=("deepset",))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="spacing"):
        labeled_events(DATA, start=START, spacing=timedelta(0), sources=("deepset",))
    with pytest.raises(ValueError, match="unknown labeled sources"):
        labeled_events(DATA, start=START, sources=("deepset", "nope"))


def test_unknown_labels_and_missing_files_fail_loudly(tmp_path: Path) -> None:
    folder = tmp_path / "jailbreakbench"
    folder.mkdir()
    (folder / "labels.csv").write_text(
        "method,attack_type,model,index,category,jailbroken,jailbroken_llama_guard1,"
        "published_attack_success_rate\nPAIR,black_box,m,0,Privacy,maybe,,0.5\n",
        encoding="utf-8",
    )
    with pytest.raises(LabeledDataError, match="jailbroken='maybe'"):
        labeled_events(tmp_path, start=START, sources=("jailbreakbench",))
    folder = tmp_path / "deepset_prompt_injections"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "hi", "label": 2}\n', encoding="utf-8")
    (folder / "test.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(LabeledDataError, match="label='2'"):
        labeled_events(tmp_path, start=START, sources=("deepset",))
    with pytest.raises(LabeledDataError, match="not found"):
        labeled_events(tmp_path, start=START, sources=("xstest",))


# --- the JailbreakBench extract script ----------------------------------------------------------


def _extract_module() -> ModuleType:
    path = DATA / "jailbreakbench" / "extract.py"
    spec = importlib.util.spec_from_file_location("jailbreakbench_extract", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_extract_script_writes_labels_only(tmp_path: Path) -> None:
    artifact = {
        "parameters": {"model": "m-1", "attack_type": "black_box", "attack_success_rate": 0.5},
        "jailbreaks": [
            {
                "index": 0,
                "category": "Privacy",
                "prompt": "SECRET PROMPT",
                "response": None,
                "jailbroken": True,
                "jailbroken_llama_guard1": False,
            },
            {
                "index": 1,
                "category": "Malware/Hacking",
                "prompt": None,
                "response": "SECRET",
                "jailbroken": False,
            },
        ],
    }
    (tmp_path / "art" / "X" / "black_box").mkdir(parents=True)
    (tmp_path / "art" / "X" / "black_box" / "m-1.json").write_text(json.dumps(artifact))
    out = tmp_path / "labels.csv"
    assert _extract_module().main([str(tmp_path / "art"), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (
        "method,attack_type,model,index,category,jailbroken,jailbroken_llama_guard1,"
        "published_attack_success_rate\n"
        "X,black_box,m-1,0,Privacy,true,false,0.5\n"
        "X,black_box,m-1,1,Malware/Hacking,false,,0.5\n"
    )
