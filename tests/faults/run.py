"""Run the fault-injection scenarios and print one verdict line each (docs/faults.md).

    .venv/bin/python -m tests.faults.run                      # the full run (about 1 M events)
    .venv/bin/python -m tests.faults.run --events 20000 --random-kills 2 --scenarios crashes

Each scenario starts from an empty warehouse and topic, injects its faults into real
services (Kafka, PostgreSQL, Alertmanager, the job as its own process), restarts what an
operator would restart, and compares the outcome with the ground truth of the generated
records. Exit status 0 when every verdict is exact.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.faults import scenarios
from tests.faults.check import Verdict
from tests.faults.harness import build_input, say, world

SCENARIOS = ("crashes", "broker", "broker-of-three", "warehouse-outage", "channels", "storage")
WAREHOUSES = ("sqlite", "postgresql")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.faults.run",
        description="Fault-injection scenarios against real services; one verdict line each "
        "(exact / lost N / doubled N / stalled / crashed).",
    )
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--warehouses", nargs="+", choices=WAREHOUSES, default=list(WAREHOUSES),
                   help="warehouses of the scenarios that run on both (default: both)")  # fmt: skip
    p.add_argument("--events", type=int, default=1_000_000, help="valid events per scenario")
    p.add_argument("--broken", type=int, default=20,
                   help="records of each broken and poison kind mixed in (21 kinds)")  # fmt: skip
    p.add_argument("--random-kills", type=int, default=6,
                   help="kills at random instants, after one at each crash point")  # fmt: skip
    p.add_argument("--batches", type=int, default=30, help="micro-batches the input makes")
    p.add_argument("--outage", type=float, default=60.0,
                   help="seconds PostgreSQL and the broker stay down")  # fmt: skip
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--workdir", type=Path, default=None,
                   help="services' data and job logs (default: a temporary folder)")  # fmt: skip
    args = p.parse_args(argv)
    started = time.monotonic()
    say(f"generating {args.events:,} events and {args.broken} records of each broken kind")
    records = build_input(args.seed, args.events, args.broken)
    max_offsets = max(100, len(records) // args.batches)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="safewatch-faults-"))
    verdicts: list[Verdict] = []
    with world(
        root, postgres="postgresql" in args.warehouses or "warehouse-outage" in args.scenarios
    ) as w:
        for name in args.scenarios:
            if name == "crashes":
                for wh in args.warehouses:
                    verdicts.append(scenarios.crashes(
                        w, wh, records, random_kills=args.random_kills, seed=args.seed,
                        max_offsets=max_offsets,
                    ))  # fmt: skip
            elif name == "broker":
                for wh in args.warehouses:
                    verdicts.append(scenarios.broker(
                        w, wh, records, down_s=args.outage, max_offsets=max_offsets
                    ))  # fmt: skip
            elif name == "broker-of-three":
                for wh in args.warehouses:
                    verdicts.append(scenarios.broker_of_three(
                        w, wh, records, down_s=args.outage, max_offsets=max_offsets
                    ))  # fmt: skip
            elif name == "warehouse-outage":
                verdicts.append(
                    scenarios.warehouse_outage(
                        w, records, down_s=args.outage, max_offsets=max_offsets
                    )
                )
            elif name == "channels":
                for wh in args.warehouses:
                    verdicts.append(scenarios.channels(w, wh, records, max_offsets=max_offsets))
            elif name == "storage":
                verdicts.append(scenarios.storage(w, records, max_offsets=max_offsets))
            say(verdicts[-1].line())
    print()
    for v in verdicts:
        print(v.line())
    print(
        f"\n{len(verdicts)} scenario(s) in {time.monotonic() - started:.0f} s; "
        f"data and job logs in {root}"
    )
    return 0 if all(v.exact for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
