"""What every `safewatch` command shares: the log line, the settings, argument types."""

from __future__ import annotations

import argparse
import difflib
from datetime import UTC, datetime

from pipelines.errors import SafewatchError
from pipelines.settings import Settings


def log(message: str) -> None:
    print(f"[safewatch {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def load_settings(args: argparse.Namespace) -> Settings:
    return Settings.load(args.config)


def rate_id(text: str) -> str:
    """`text` if it is a rate of the metric catalog; else an argparse error with the closest."""
    from pipelines.metrics.catalog import RATES

    ids = [r.id for r in RATES]
    if text in ids:
        return text
    close = difflib.get_close_matches(text, ids, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    msg = f"no rate {text!r}: {hint}rates: {', '.join(ids)}"
    raise argparse.ArgumentTypeError(msg)


def parse_time(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        msg = f"{option} {text!r} is not an ISO 8601 time, e.g. 2026-11-23T10:00:00Z"
        raise SafewatchError(msg) from exc
    if value.tzinfo is None:
        msg = f"{option} {text!r} needs a time zone, e.g. 2026-11-23T10:00:00Z"
        raise SafewatchError(msg)
    return value.astimezone(UTC)
