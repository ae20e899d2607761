"""The job's and the demo's counts of alerts read against each other: transitions by what
they became, notices by channel and kind, adding up to what the tables show.
"""

from __future__ import annotations

from types import SimpleNamespace

from jobs.demo import notices_explained
from pipelines.stream.reports import Derived, transitions_text


def test_transitions_are_counted_by_what_they_became() -> None:
    changes = {"resolved": 2, "inactive": 1, "pending": 4, "firing": 4}
    assert transitions_text(11, changes) == (
        "11 alert transition(s) (4 to pending, 4 to firing, 2 resolved, 1 back to inactive)"
    )
    assert transitions_text(0, {}) == "0 alert transition(s)"
    line = Derived(batch_id=3, watermark=None, alert_transitions=1, alert_changes={"firing": 1})
    assert "1 alert transition(s) (1 to firing)" in line.describe()


def test_the_demo_says_how_transitions_and_notices_add_up() -> None:
    statuses = ("pending", "firing", "pending", "inactive", "firing", "resolved")
    history = [{"to_status": s} for s in statuses]
    # Alert A fires in windows 1-3 and resolves; alert B fires in window 2 (still firing).
    keys = ["A|s|w1|firing", "A|s|w2|firing", "A|s|w3|firing", "A|s|w4|resolved", "B|s|w2|firing"]
    notices = [
        SimpleNamespace(channel=c, dedup_key=k, sent_at=None)
        for c in ("kafka", "alertmanager")
        for k in keys
    ]
    text = notices_explained(history, notices)
    assert text.startswith(
        "6 alert transitions: the 3 above, 2 to pending (a rule true in one window, waiting "
        "for the next) and 1 from pending back to inactive (not true again): recorded, never sent."
    )
    assert "4 firing and 1 resolved notices, 5 per channel to alertmanager and kafka" in text
    assert text.endswith("10 in all.")


def test_demo_help_describes_the_demo_and_lists_every_scenario(capsys) -> None:
    import pytest

    from jobs.cli import main
    from pipelines.synth.scenarios import SCENARIOS

    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "Everything end to end on this machine" in out
    assert all(f"{name}: " in out for name in SCENARIOS)
    assert "leave the Kafka broker and Alertmanager running" in out
