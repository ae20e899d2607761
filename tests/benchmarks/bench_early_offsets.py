"""Benchmark: time to page of a rate incident by where in its window it starts, with and
without the window's slices (stream.early_slice), by simulation of the job's early test.

The live benchmark (bench_alert_delay.py) measures one incident per run; where in its
5-minute window the incident starts is chance, and it decides much of the delay: an
incident that starts mid-window shares the window with healthy minutes. This benchmark
runs the job's own early evaluation (`pipelines.alerting.early.early_evidence` with the
repository's `HarmfulOutputRateHigh` rule, bound to the stored dimensions) on simulated
traffic instead, many times per starting point:

- one segment at `--rate` events/s (Poisson), each event from a user of its own (hashed
  to a random one of 32 buckets), harmful with probability 1 % before T0 and 5 % after;
  the segment's baseline is 1 % of 27,000 events and its last closed window held 3,000
  (as in the live benchmark after its hour of history);
- micro-batches every `--trigger` seconds at a random phase; after each one, every window
  from the incident's first to the current one is evaluated early, as the job does while
  the watermark (10 minutes) keeps them open, with the counts of the events before the
  batch; each batch is taken to need `--batch-seconds` before its page is out;
- the delay is from T0 to the first batch whose evaluation fires, plus that time; runs
  that do not fire within 5 minutes count as later than that.

For each start offset into the window it prints the share of runs paged within 2 minutes
(the target of a 5x incident in a segment of ~10 events/s) and the median delay: with
1-minute slices as the job tests them (a window's latest slices together with the next
window's first ones), with slices tested within their own window only, and with the window
tested whole (early_slice = the window). All see the same simulated events. A benchmark,
not a test.

    .venv/bin/python tests/benchmarks/bench_early_offsets.py
    .venv/bin/python tests/benchmarks/bench_early_offsets.py --runs 300 --trigger 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

WINDOW_S = 300
HORIZON_S = 300  # a run that has not fired this long after T0 counts as later
TARGET_S = 120
BUCKETS = 32
BASELINE = (270, 27_000)  # 1 % of the segment's history
TYPICAL = 3_000  # events of the segment's last closed window


def _rule() -> Any:
    from pipelines.alerting.engine import bind_rules
    from pipelines.alerting.loader import load_rules

    rules = bind_rules(load_rules([REPO / "alerts" / "rules"]), ("locale",))
    (rule,) = [r for r in rules if r.name == "HarmfulOutputRateHigh"]
    return rule


def simulate(
    rng: np.random.Generator,
    offset: float,
    *,
    rate: float,
    trigger: float,
    batch_seconds: float,
    slices: int,
    rule: Any,
    across: bool = True,
) -> float:
    """Delay (s) from T0 to the page of one run; inf when not paged within HORIZON_S."""
    from pipelines.alerting.early import early_evidence
    from pipelines.alerting.evaluate import OpenWindow

    t0 = float(offset)  # time 0 is the start of the incident's window
    end = t0 + HORIZON_S
    count = rng.poisson(rate * end)
    times = np.sort(rng.uniform(0.0, end, count))
    harmful = rng.random(count) < np.where(times < t0, 0.01, 0.05)
    bucket = rng.integers(0, BUCKETS, count)
    window = (times // WINDOW_S).astype(np.int64)
    part = ((times % WINDOW_S) * slices // WINDOW_S).astype(np.int64)
    phase = rng.uniform(0.0, trigger)
    segment = (("locale", "de-DE"),)
    for at in np.arange(t0 + phase, end, trigger):
        seen = int(np.searchsorted(times, at))
        counted: dict[int, tuple[Any, ...]] = {}
        for w in range(int(window[seen - 1]) + 1 if seen else 0):
            mine = np.flatnonzero(window[:seen] == w)
            if not len(mine):
                continue
            x_b = np.bincount(bucket[mine], weights=harmful[mine], minlength=BUCKETS)
            n_b = np.bincount(bucket[mine], minlength=BUCKETS)
            x_s = np.bincount(part[mine], weights=harmful[mine], minlength=slices)
            n_s = np.bincount(part[mine], minlength=slices)
            counted[w] = (
                int(harmful[mine].sum()),
                len(mine),
                (x_b.astype(int).tolist(), n_b.tolist()),
                (x_s.astype(int).tolist(), n_s.tolist()) if slices > 1 else None,
            )
        for w, (x, n, buckets, sliced) in counted.items():
            after = counted.get(w + 1)
            opened = OpenWindow(
                segment,
                x,
                n,
                baseline_rate=BASELINE[0] / BASELINE[1],
                baseline_counts=BASELINE,
                typical_denominator=TYPICAL,
                buckets=buckets,
                slices=sliced,
                next_slices=after[3] if after is not None and across else None,
                next_buckets=after[2] if after is not None and across else None,
            )
            if early_evidence(rule, opened) is not None:
                return float(at - t0 + batch_seconds)
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=150, help="runs per start offset (150)")
    parser.add_argument("--rate", type=float, default=10.0, help="events/s of the segment (10)")
    parser.add_argument(
        "--trigger", type=float, nargs="+", default=[30.0, 5.0], help="trigger seconds (30 5)"
    )
    parser.add_argument(
        "--batch-seconds", type=float, default=1.0, help="seconds a batch takes to page (1)"
    )
    parser.add_argument("--seed", type=int, default=11, help="random seed (11)")
    args = parser.parse_args()
    rule = _rule()
    offsets = list(range(0, WINDOW_S, 30))
    started = time.perf_counter()
    print(
        f"{args.runs} runs per start; 1 % -> 5 % at {args.rate:g} events/s; share paged within "
        f"{TARGET_S} s (median delay)"
    )
    modes = {
        "slices": {"slices": 5, "across": True},
        "within window": {"slices": 5, "across": False},
        "whole window": {"slices": 1, "across": False},
    }
    for trigger in args.trigger:
        print(f"\ntrigger {trigger:g} s")
        print(f"{'start into window':>18}" + "".join(f"{m:>20}" for m in modes))
        shares: dict[str, list[float]] = {m: [] for m in modes}
        for offset in offsets:
            cells = []
            seed = [args.seed, int(trigger * 10), offset]
            for mode, how in modes.items():
                rng = np.random.default_rng(seed)  # the same events for every mode
                delays = np.array(
                    [
                        simulate(
                            rng,
                            offset,
                            rate=args.rate,
                            trigger=trigger,
                            batch_seconds=args.batch_seconds,
                            rule=rule,
                            **how,
                        )
                        for _ in range(args.runs)
                    ]
                )
                share = float(np.mean(delays <= TARGET_S))
                shares[mode].append(share)
                median = float(np.median(delays))
                text = "> 300 s" if np.isinf(median) else f"{median:.0f} s"
                cells.append(f"{share:.0%} ({text})")
            print(
                f"{offset // 60}:{offset % 60:02d}".rjust(18) + "".join(c.rjust(20) for c in cells)
            )
        print(f"{'all starts':>18}" + "".join(f"{np.mean(v):>20.0%}" for v in shares.values()))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
