"""What a person's mistake at the `safewatch` command line gets: one line that says what to
change, an error exit, no traceback and nothing created behind their back.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs.cli import main
from pipelines.metrics.catalog import RATES
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink
from tests.analyst_data import DIMENSION_SET, fill


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with no warehouse, no settings file and no SAFEWATCH_* variable."""
    for name in [k for k in os.environ if k.startswith("SAFEWATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_misspelled_rate_names_the_closest_ones(elsewhere: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["show", "--rate", "injection_rate"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no rate 'injection_rate': did you mean" in err
    assert "injection_attempt_rate" in err
    # Every rate of the catalog is listed, so the person can pick one.
    assert all(r.id in err for r in RATES)
    assert "Traceback" not in err


def test_a_rate_of_the_catalog_is_accepted(elsewhere: Path, monkeypatch, capsys) -> None:
    url = f"sqlite:///{elsewhere / 'wh.db'}"
    engine = make_engine(url)
    migrate(engine)
    fill(WarehouseSink(engine), drift=False)
    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__URL", url)
    monkeypatch.setenv("SAFEWATCH_STREAM__DIMENSIONS", DIMENSION_SET)
    assert main(["show", "--rate", "refusal_rate", "--no-timeline"]) == 0
    assert "Segments by peak refusal_rate" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["show"],
        ["alerts", "status"],
        ["alerts", "deliver"],
        ["alerts", "ack", "--by", "kim"],
        ["drift"],
        ["report", "weekly"],
    ],
)
def test_reading_a_warehouse_that_does_not_exist_creates_none(
    elsewhere: Path, capsys, argv: list[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no warehouse at var/warehouse.db (the default of warehouse.url)" in err
    assert "SAFEWATCH_WAREHOUSE__URL" in err
    assert not (elsewhere / "var").exists()


def test_an_empty_warehouse_is_named_and_said_empty(elsewhere: Path, monkeypatch, capsys) -> None:
    path = elsewhere / "empty.db"
    migrate(make_engine(f"sqlite:///{path}"))
    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__URL", f"sqlite:///{path}")
    assert main(["show"]) == 0
    out = capsys.readouterr().out
    assert f"The warehouse sqlite:///{path} has no aggregates" in out
    assert "`safewatch run`" in out


def test_a_misspelled_settings_section_stops_every_command(
    elsewhere: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SAFEWATCH_STRAEM__WINDOW", "1 minute")
    assert main(["config", "show"]) == 2
    assert "did you mean SAFEWATCH_STREAM__WINDOW?" in capsys.readouterr().err


def test_a_report_of_an_empty_warehouse_says_which_and_that_it_is_empty(
    elsewhere: Path, monkeypatch, capsys
) -> None:
    path = elsewhere / "empty.db"
    migrate(make_engine(f"sqlite:///{path}"))
    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__URL", f"sqlite:///{path}")
    assert main(["report", "weekly", "--out", str(elsewhere / "out")]) == 0
    out = capsys.readouterr().out
    assert f"the warehouse sqlite:///{path} has no aggregates yet" in out
    assert f"from the warehouse sqlite:///{path}" in out
