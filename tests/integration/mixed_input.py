"""Build a mixed Kafka input with known fates: valid events, duplicates, every kind of
broken record, and PII that upstream redaction missed. Each record carries the bucket it
must end in, which is the ground truth the pipeline is checked against.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipelines.synth import generate_events


@dataclass(frozen=True)
class Record:
    payload: bytes
    expected: str  # aggregated, duplicate, or the rejection reason
    event: dict | None = None  # the valid event, for aggregated records
    pii: tuple[str, ...] = ()  # raw personal data planted in the record
    incomplete: bool = False  # a required safety field is missing
    attributable: bool = False  # valid segment and event time: counted in events_seen


def _dump(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


# Personal data an upstream redactor should have removed. Built from parts so that no test
# file holds a ready-made string a scanner of the repository would flag.
def planted_pii(rng: random.Random, i: int) -> list[tuple[str, str]]:
    user = f"jane.doe{i}"
    return [
        ("email", f"{user}@example.org"),
        ("phone", f"+44 20 7946 {rng.randint(1000, 9999)}"),
        ("payment_card", "4111 1111 1111 1111"),
        ("ipv4", f"203.0.113.{rng.randint(1, 254)}"),
        ("us_ssn", f"{rng.randint(100, 599)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"),
    ]


KINDS = ("duplicate", "invalid_json", "not_object", "missing", "extra", "mistyped", "enum",
         "version", "too_large", "future", "pii", "raw_id")  # fmt: skip


def build_mixed_input(
    rng: random.Random,
    *,
    seed: int,
    valid: int,
    kinds: list[str],
    max_message_bytes: int,
    garbage: list[bytes] = (),  # type: ignore[assignment]
) -> list[Record]:
    """`valid` generated events plus one broken record per entry of `kinds`, shuffled."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    events = list(
        generate_events(
            seed=seed,
            start=start,
            duration=timedelta(minutes=30),
            rate_per_s=max(valid / 1800, 0.01),
        )
    )[:valid]
    records = [Record(_dump(e), "aggregated", e, attributable=True) for e in events]
    broken: list[Record] = []
    for i, kind in enumerate(kinds):
        base = copy.deepcopy(rng.choice(events))
        if kind == "duplicate":
            broken.append(Record(_dump(base), "duplicate"))
            continue
        base["event_id"] = f"00000000-0000-4000-8000-{i:012d}"  # unique, not a duplicate
        if kind == "invalid_json":
            broken.append(Record(_dump(base)[: rng.randint(1, 60)], "invalid_json"))
        elif kind == "not_object":
            broken.append(Record(rng.choice([b"[]", b"42", b'"text"', b"null"]), "invalid_json"))
        elif kind == "missing":
            field = rng.choice(list(base["request"]))
            del base["request"][field]
            # request.outcome is safety telemetry; token counts and latency are not
            broken.append(
                Record(_dump(base), "schema_violation", incomplete=field == "outcome",
                       attributable=True)
            )  # fmt: skip
        elif kind == "extra":
            base["segment"]["debug"] = "1"
            broken.append(Record(_dump(base), "schema_violation"))
        elif kind == "mistyped":
            base["request"]["output_tokens"] = "lots"
            broken.append(Record(_dump(base), "schema_violation", attributable=True))
        elif kind == "enum":
            base["segment"]["risk_tier"] = "production"
            broken.append(Record(_dump(base), "schema_violation"))
        elif kind == "version":
            base["schema_version"] = "2"
            broken.append(Record(_dump(base), "unknown_schema_version"))
        elif kind == "too_large":
            base["padding"] = "x" * (max_message_bytes + 10)
            broken.append(Record(_dump(base), "message_too_large"))
        elif kind == "future":
            base["event_time"] = (datetime.now(UTC) + timedelta(days=2)).strftime(
                "%Y-%m-%dT%H:%M:%S.000Z"
            )
            broken.append(Record(_dump(base), "event_time_out_of_range"))
        elif kind == "pii":
            name, value = rng.choice(planted_pii(rng, i))
            text = f"Sure, I can reach you at {value} tomorrow."
            base["excerpts"] = {"prompt": "Contact details please", "response": text}
            broken.append(Record(_dump(base), "pii_detected", pii=(value,), attributable=True))
        elif kind == "raw_id":
            value = f"user{i}.name@example.com"
            base["user_id"] = value
            broken.append(Record(_dump(base), "schema_violation", pii=(value,), attributable=True))
    broken += [Record(g, "invalid_json") for g in garbage]
    mixed = records + broken
    rng.shuffle(mixed)
    return mixed
