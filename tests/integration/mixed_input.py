"""Build a mixed Kafka input with known fates: valid events, duplicates, every kind of
broken record, poison records (deep nesting, huge numbers, lone surrogates, PEM storms,
segment values at and over the contract's length limit), and PII that upstream redaction
missed, in free text and in segment values, with and without schema errors. Each record
carries the bucket it must end in, which is the ground truth the pipeline is checked
against.
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
    # The event as counted, for aggregated records: a free text in which personal data was
    # planted reads "[REDACTED]" (so does such a segment value).
    event: dict | None = None
    pii: tuple[str, ...] = ()  # raw personal data planted in the record
    incomplete: bool = False  # a required safety field is missing
    attributable: bool = False  # valid segment and event time: counted in events_seen
    text_dropped: bool = False  # aggregated with its PII-bearing text dropped (DLQ copy)

    @property
    def dlq_reason(self) -> str | None:
        """The reason of its dead-letter record, if it gets one."""
        if self.text_dropped:
            return "pii_detected"
        return None if self.expected in ("aggregated", "duplicate") else self.expected


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
         "version", "too_large", "future", "pii", "raw_id", "deep", "huge_number",
         "surrogate", "pem_storm", "long_segment", "cjk_segment", "pii_segment",
         "pii_everywhere", "schema_pii")  # fmt: skip
REDACTED = "[REDACTED]"
SEGMENT_MAX = 50  # the contract's maxLength of a segment value
# Free-text segment fields (risk_tier is an enum).
TEXT_SEGMENT_FIELDS = ("product_surface", "feature", "model_id", "model_version",
                       "prompt_version", "policy_version", "locale", "region", "client",
                       "user_cohort")  # fmt: skip
PEM_HEADER = "-----BEGIN " + "PRIVATE KEY-----"


def _redacted(event: dict, fields: tuple[str, ...]) -> dict:
    counted = copy.deepcopy(event)
    for f in fields:
        counted["segment"][f] = REDACTED
    return counted


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
            # Counted by its structured fields, the text that held the data dropped.
            name, value = rng.choice(planted_pii(rng, i))
            text = f"Sure, I can reach you at {value} tomorrow."
            base["excerpts"] = {"prompt": "Contact details please", "response": text}
            counted = copy.deepcopy(base)
            counted["excerpts"]["response"] = REDACTED
            broken.append(Record(_dump(base), "aggregated", counted, pii=(value,),
                                 attributable=True, text_dropped=True))  # fmt: skip
        elif kind == "deep":
            poison = rng.choice([
                b'{"a":' * 1000 + b"1" + b"}" * 1000,
                b"[" * 2000 + b"]" * 2000,
                _dump(base)[:-1] + b',"zz":' + b"[" * 1500 + b"]" * 1500 + b"}",
            ])  # fmt: skip
            broken.append(Record(poison, "invalid_json"))
        elif kind == "huge_number":
            digits = "9" * rng.randint(4400, 5000)
            raw = _dump(base).replace(b'"input_tokens":', b'"input_tokens":' + digits.encode()
                                      + b',"zz":', 1)  # fmt: skip
            broken.append(Record(raw, "invalid_json"))
        elif kind == "surrogate":
            raw = _dump(base).replace(b'"feature":"', b'"feature":"\\ud800', 1)
            broken.append(Record(raw, "invalid_json"))
        elif kind == "pem_storm":
            # Within the excerpt's 2,000 characters: a storm of headers, each a hit.
            base["excerpts"] = {"prompt": (PEM_HEADER + "\n") * 70, "response": None}
            counted = copy.deepcopy(base)
            counted["excerpts"]["prompt"] = REDACTED
            broken.append(Record(_dump(base), "aggregated", counted, pii=(PEM_HEADER,),
                                 attributable=True, text_dropped=True))  # fmt: skip
        elif kind == "long_segment":
            field = rng.choice(TEXT_SEGMENT_FIELDS)
            base["segment"][field] = rng.choice(["x", "語", "é"]) * (SEGMENT_MAX + 1)
            broken.append(Record(_dump(base), "schema_violation"))
        elif kind == "cjk_segment":
            # At the limit: valid, and it must fit every warehouse column it reaches.
            base["segment"]["locale"] = "語" * SEGMENT_MAX
            base["segment"]["model_version"] = "ä" * SEGMENT_MAX
            broken.append(Record(_dump(base), "aggregated", base, attributable=True))
        elif kind == "pii_segment":
            name, value = rng.choice([p for p in planted_pii(rng, i) if p[0] != "ipv4"])
            field = rng.choice(("model_version", "locale"))
            base["segment"][field] = value
            broken.append(Record(_dump(base), "aggregated", _redacted(base, (field,)),
                                 pii=(value,), attributable=True, text_dropped=True))  # fmt: skip
        elif kind == "pii_everywhere":
            values = [v for name, v in planted_pii(rng, i) if name != "ipv4"]
            for f in TEXT_SEGMENT_FIELDS:
                base["segment"][f] = rng.choice(values)
            base["privacy"]["redactor_version"] = rng.choice(values)
            base["excerpts"] = {"prompt": " ".join(values), "response": rng.choice(values)}
            counted = _redacted(base, TEXT_SEGMENT_FIELDS)
            counted["privacy"]["redactor_version"] = REDACTED
            counted["excerpts"] = {"prompt": REDACTED, "response": REDACTED}
            broken.append(Record(_dump(base), "aggregated", counted, pii=tuple(values),
                                 attributable=True, text_dropped=True))  # fmt: skip
        elif kind == "schema_pii":
            # A schema error does not let a planted segment value through: counted in
            # events_seen under [REDACTED], never stored.
            value = f"ops{i}@example.org"
            base["refusal"]["style"] = "rude"
            base["segment"]["model_version"] = value
            broken.append(Record(_dump(base), "schema_violation", pii=(value,),
                                 attributable=True, incomplete=True))  # fmt: skip
        elif kind == "raw_id":
            value = f"user{i}.name@example.com"
            base["user_id"] = value
            broken.append(Record(_dump(base), "schema_violation", pii=(value,), attributable=True))
    broken += [Record(g, "invalid_json") for g in garbage]
    mixed = records + broken
    rng.shuffle(mixed)
    return mixed
