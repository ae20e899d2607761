"""The fault scenarios: each produces its input, runs the job through its faults, restarts
it as an operator would, and returns a `Verdict` against the input's ground truth.

- `crashes`: the job killed (`kill -9` of its process group) at each crash point
  (pipelines/crashpoints.py: after the dead-letter write, inside the commit transaction,
  between the commit and Spark's checkpoint, before the derivation) and at random instants
  mid-stream, restarted each time; then its checkpoint lost once, which the warehouse must
  refuse to count again.
- `broker`: the Kafka broker killed mid-run and started again.
- `broker_of_three`: on a cluster of three brokers, the leader of a partition killed mid-run
  and started again; the job goes on without a restart.
- `warehouse_outage`: PostgreSQL stopped as by a crash mid-run and started again: the job
  waits within its retry budget, with no restart.
- `channels`: Alertmanager and the webhook down while alerts fire and the job runs on with no
  new events; both come back and get every notice, once.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from collections import Counter

from sqlalchemy import func, select

from pipelines.alerting.alertmanager_client import get_alerts
from pipelines.crashpoints import POINTS
from tests.faults.check import Verdict, check
from tests.faults.harness import (
    Job,
    Scenario,
    World,
    kafka_cluster,
    partition_leader,
    say,
    wait_for,
)
from tests.integration.mixed_input import Record

# How many batch ids ahead of the ledger a crash point is armed for: it fires on the first
# batch of them that reaches it (a batch with no dead letters never reaches `dlq-written`).
ARMED_AHEAD = 6
# Free space on the warehouse's small file system when the storage scenario starts.
FREE_KIB = 3000


def _finish(sc: Scenario, job: Job, verdict: Verdict, *, restarts: int = 0) -> bool:
    """Wait for `job` to end; restart it up to `restarts` times if it failed. False (and the
    verdict says stalled or crashed) if it never ends well.
    """
    for attempt in range(restarts + 1):
        code = job.wait()
        if code is None:
            job.kill()
            verdict.stalled = True
            say(f"{verdict.scenario}: run {sc.runs} did not end; log {job.log_path}")
            return False
        if code == 0:
            return True
        say(f"{verdict.scenario}: run {sc.runs} exited {code}: {job.last_line()}")
        verdict.facts.append(f"run {sc.runs} stopped: {job.last_line()}")
        if attempt < restarts:
            job = sc.job()
    verdict.crashed = job.last_line()
    return False


def crashes(
    world: World,
    warehouse: str,
    records: list[Record],
    *,
    random_kills: int,
    seed: int,
    max_offsets: int,
    points: tuple[str, ...] = POINTS,
) -> Verdict:
    rng = random.Random(seed)
    sc = Scenario(f"crashes-{warehouse}", world, warehouse, records, max_offsets=max_offsets)
    sc.produce()
    verdict = Verdict(f"job crashes, {warehouse}")
    kills = Counter[str]()
    for point in points:
        ahead = sc.committed_batches()
        armed = ",".join(f"{point}:{b}" for b in range(ahead, ahead + ARMED_AHEAD))
        job = sc.job(crash_at=armed)
        code = job.wait()
        if code is None:
            job.kill()
            verdict.stalled = True
            return verdict
        if code == -9:
            kills[point] += 1
            say(f"{verdict.scenario}: killed at {point} after {sc.committed_batches()} batches")
        elif code == 0:
            say(f"{verdict.scenario}: {point} not reached (the run finished)")
            break
        else:
            verdict.crashed = job.last_line()
            return verdict
    for _ in range(random_kills):
        # Mid-stream: after 1 to 3 more committed batches, at a random instant of the next.
        target = sc.committed_batches() + rng.randint(1, 3)
        job = sc.job()
        started = time.monotonic()
        if not wait_for(lambda t=target: sc.committed_batches() >= t, 600) or not job.running():
            break  # it finished first: nothing left to interrupt
        per_batch = (time.monotonic() - started) / 2
        time.sleep(rng.uniform(0.0, max(per_batch, 1.0)))
        if not job.running():
            break
        job.kill()
        kills["random"] += 1
    if not _finish(sc, sc.job(), verdict):
        return verdict
    verdict.facts.insert(
        0,
        f"{sum(kills.values())} kills "
        f"({', '.join(f'{k} {n}' for k, n in kills.items())}), {sc.runs} runs",
    )
    # The checkpoint lost: the warehouse refuses to count the same offsets again.
    shutil.rmtree(sc.checkpoint, ignore_errors=True)
    shutil.rmtree(sc.dedup, ignore_errors=True)
    again = sc.job()
    code = again.wait()
    if code == 0:
        verdict.problems.append("a run without its checkpoint was not refused")
    elif "already counted" not in again.last_line() or "Traceback" in again.output():
        verdict.problems.append(
            f"a run without its checkpoint stopped unclearly: {again.last_line()}"
        )
    else:
        verdict.facts.append("checkpoint lost once: refused, nothing counted twice")
    return check(sc, verdict)


def broker(
    world: World, warehouse: str, records: list[Record], *, down_s: float, max_offsets: int
) -> Verdict:
    sc = Scenario(f"broker-{warehouse}", world, warehouse, records, max_offsets=max_offsets)
    sc.produce()
    verdict = Verdict(f"broker killed, {warehouse}")
    job = sc.job()
    if not wait_for(lambda: sc.committed_batches() >= 2, 300, what="two batches"):
        verdict.stalled = not job.running()
    killed = world.broker.kill()
    time.sleep(down_s)
    world.broker.start()
    verdict.facts.append(f"broker (pid {killed}) down {down_s:g} s mid-run")
    if not _finish(sc, job, verdict, restarts=2):
        return verdict
    return _nothing_held(sc, check(sc, verdict))


def broker_of_three(
    world: World, warehouse: str, records: list[Record], *, down_s: float, max_offsets: int
) -> Verdict:
    """On a cluster of three brokers (replication 3, min.insync.replicas 2), the leader of
    partition 0 killed mid-run and started again `down_s` later: the job must go on with no
    restart, reading from the new leaders.
    """
    verdict = Verdict(f"one broker of three killed, {warehouse}")
    name = f"cluster-{warehouse}"
    with kafka_cluster(world, name) as (cw, cluster):
        sc = Scenario(name, cw, warehouse, records, max_offsets=max_offsets)
        sc.produce()
        job = sc.job()
        if not wait_for(lambda: sc.committed_batches() >= 2, 300, what="two batches"):
            verdict.stalled = not job.running()
        node = partition_leader(cw.kafka, sc.topic, 0)
        cluster.kill(node)
        time.sleep(down_s)
        cluster.restart(node)
        verdict.facts.append(f"node {node} (leader of partition 0) down {down_s:g} s mid-run")
        if not _finish(sc, job, verdict):
            return verdict
        return _nothing_held(sc, check(sc, verdict))


def _nothing_held(sc: Scenario, verdict: Verdict) -> Verdict:
    """Once the broker is back every notice of the outbox is out: none may stay held."""
    outbox = sc.tables.outbox
    with sc.engine.connect() as conn:
        held = conn.execute(
            select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        ).scalar_one()
    if held:
        verdict.problems.append(f"{held} notice(s) still held after the broker came back")
    return verdict


def warehouse_outage(
    world: World, records: list[Record], *, down_s: float, max_offsets: int
) -> Verdict:
    assert world.postgres is not None
    sc = Scenario("outage-postgresql", world, "postgresql", records, max_offsets=max_offsets)
    sc.produce()
    verdict = Verdict("warehouse outage, postgresql")
    job = sc.job()
    wait_for(lambda: sc.committed_batches() >= 2, 300, what="two batches")
    sc.engine.dispose()
    world.postgres.stop("immediate")
    time.sleep(down_s)
    world.postgres.start()
    if not _finish(sc, job, verdict):
        return verdict
    retries = job.output().count("trying again in")
    verdict.facts.append(f"PostgreSQL down {down_s:g} s mid-run; {retries} retries, no restart")
    if not retries:
        verdict.problems.append("the outage was not noticed (no retry logged)")
    return check(sc, verdict)


def channels(world: World, warehouse: str, records: list[Record], *, max_offsets: int) -> Verdict:
    am, hook = world.alertmanager, world.webhook
    assert am is not None and hook is not None
    sc = Scenario(
        f"channels-{warehouse}", world, warehouse, records, max_offsets=max_offsets,
        channels=("alertmanager", "kafka", "webhook"),
    )  # fmt: skip
    sc.produce()
    verdict = Verdict(f"alert channels down, {warehouse}")
    am.stop()  # Alertmanager keeps alerts in memory only: it starts again empty
    hook.stop()
    hook.received.clear()  # what an earlier scenario sent it
    job = sc.job(continuous=True)
    outbox = sc.tables.outbox

    def pending(channel: str) -> int:
        with sc.engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.id).where(outbox.c.channel == channel, outbox.c.sent_at.is_(None))
            ).all()
        return len(rows)

    done = wait_for(lambda: sc.committed_rows() == len(records), 600, what="the input")
    if not done or not wait_for(lambda: pending("alertmanager") > 0, 120, what="a notice"):
        job.interrupt()
        verdict.problems.append("no alert fired on the input: nothing to hold back")
        return check(sc, verdict)
    time.sleep(5)  # the channels stay down; no event arrives
    held = {c: pending(c) for c in ("alertmanager", "webhook")}
    am.start()
    hook.start()
    started = time.monotonic()
    delivered = wait_for(lambda: pending("alertmanager") == 0 and pending("webhook") == 0, 60)
    took = time.monotonic() - started
    code = job.interrupt()
    if not delivered:
        verdict.problems.append(f"notices still held {took:.0f} s after the channels came back")
    verdict.facts.append(
        f"{held['alertmanager']} + {held['webhook']} notices held while Alertmanager and the "
        f"webhook were down, delivered {took:.0f} s after they came back with no new event"
    )
    if code not in (0, 130):
        verdict.problems.append(f"Ctrl-C ended the job with {code}: {job.last_line()}")
    with sc.engine.connect() as conn:
        rows = conn.execute(select(outbox)).all()
    sent = {c: Counter(r.dedup_key for r in rows if r.channel == c) for c in ("webhook",)}

    # Alertmanager: each alert the job sent there is active, once (it collapses repeats
    # of the same labels, the identity of an alert).
    def labelset(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
        return frozenset(labels.items())

    sent_am = {
        labelset(json.loads(r.payload)["labels"]) for r in rows if r.channel == "alertmanager"
    }
    at_am = Counter(labelset(a["labels"]) for a in get_alerts(am.url))
    verdict.facts.append(f"{len(at_am)} alert(s) at Alertmanager")
    verdict.same("alerts at Alertmanager", Counter(dict.fromkeys(sent_am, 1)), at_am)
    # The webhook and the Kafka topic: each notice of the outbox, once.
    got_hook = Counter(n["dedup_key"] for n in hook.received)
    verdict.same("webhook notices", sent["webhook"], got_hook)
    return check(sc, verdict)  # the Kafka topic's notices too


def storage(world: World, records: list[Record], *, max_offsets: int) -> Verdict:
    """The SQLite warehouse on a small file system that fills up mid-run, then grown; the
    checkpoint folder made unwritable (immutable, which binds root too) mid-run, then
    writable again. Each time the job must stop with one clear line, nothing half-written,
    and finish exactly once restarted.
    """
    name = "storage-sqlite"
    small = world.root / name / "small"
    small.mkdir(parents=True, exist_ok=True)
    verdict = Verdict("storage full, then read-only, sqlite")
    _run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)])
    sc: Scenario | None = None
    try:
        sc = Scenario(
            name, world, "sqlite", records, max_offsets=max_offsets,
            url=f"sqlite:///{small / 'warehouse.db'}",
        )  # fmt: skip
        sc.produce()
        # Room for the migrated warehouse and a little more: full a few batches in.
        used = sum(f.stat().st_size for f in small.iterdir()) // 1024
        _run(["mount", "-o", f"remount,size={used + FREE_KIB}k", str(small)])
        job = sc.job()
        code = job.wait()
        batches = sc.committed_batches()
        _clear_stop(verdict, job, code, "a full disk", "database or disk is full")
        verdict.facts.append(f"disk full after {batches} batch(es)")
        _run(["mount", "-o", "remount,size=4g", str(small)])
        # The checkpoint read-only while the job runs: a batch or two later it must stop.
        job = sc.job()
        wait_for(lambda: sc.committed_batches() > batches + 1, 300, what="two more batches")
        _run(["chattr", "-R", "+i", str(sc.checkpoint)])
        try:
            code = job.wait()
        finally:
            _run(["chattr", "-R", "-i", str(sc.checkpoint)])
        if code == 0:
            verdict.facts.append("the run ended before the checkpoint was needed again")
        else:
            _clear_stop(verdict, job, code, "a read-only checkpoint", "checkpoint")
        if not _finish(sc, sc.job(), verdict):
            return verdict
        return check(sc, verdict)
    finally:
        if sc is not None:
            sc.engine.dispose()
        _run(["umount", "-l", str(small)])


def _clear_stop(verdict: Verdict, job: Job, code: int | None, fault: str, words: str) -> None:
    """The job stopped on `fault` as it should: an error exit, one line naming it."""
    last = job.last_line()
    if code in (None, 0):
        verdict.problems.append(f"{fault}: the job did not stop ({code})")
    elif not last.startswith("safewatch: error:") or words not in last:
        verdict.problems.append(f"{fault}: unclear last line: {last[:300]}")
    elif "Traceback" in job.output():
        verdict.problems.append(f"{fault}: a traceback before the error line")
    else:
        verdict.facts.append(f"{fault}: stopped with {last[:160]!r}")


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)
