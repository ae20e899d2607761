"""The settings of the weekly report (`[report]`): where it is written, the target of each
KPI and of each severity's time to resolve, how many segments it ranks, where its runbook
links point.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from pipelines.metrics.catalog import RATES
from pipelines.settings.types import Section

# The targets of the report's KPIs unless report.targets overrides them: each rate's
# `default_target` in the metric catalog.
DEFAULT_KPI_TARGETS: dict[str, float] = {
    r.id: r.default_target for r in RATES if r.default_target is not None
}
# Mean time to mitigation targets of the KPI reference, in hours per severity.
DEFAULT_MTTR_TARGETS_HOURS: dict[str, float] = {"sev1": 4.0, "sev2": 24.0}
_SEVERITY = re.compile(r"^sev[1-4]$")


class ReportSettings(Section):
    """The weekly safety-posture report for leadership (`safewatch report weekly`)."""

    out_dir: str = Field(
        "var/reports",
        description="Folder the report is written to (safety-posture-<week>.html and .md).",
    )
    targets: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_KPI_TARGETS),
        description="Target per KPI (catalog rate id -> proportion), each overridable alone, "
        "e.g. [report.targets] violation_rate = 0.002 or "
        "SAFEWATCH_REPORT__TARGETS__VIOLATION_RATE=0.002; the rest keep their defaults. A rate "
        "that is worse when higher must stay below its target, telemetry_completeness above "
        "it. Defaults are the example targets of the safety KPI reference: harmful output "
        "< 0.1 %, over-refusal (false-positive proxy) < 5 %, jailbreak success < 5 %, "
        "prompt-injection success < 1 %, unauthorized tool calls < 1 %, telemetry "
        "completeness > 98 %; PII leakage and redaction failures are 'near zero' there, "
        "taken as 0.01 %.",
    )
    min_events: int = Field(
        200,
        ge=1,
        description="Segments with fewer events in the week are not ranked among the top risks.",
    )
    top_segments: int = Field(
        5,
        ge=1,
        description="How many segments the report ranks as top risks. A segment with fewer "
        "distinct users in the week than privacy.min_distinct_users is never shown on its own "
        "(the report says how many were held back).",
    )
    mttr_targets: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_MTTR_TARGETS_HOURS),
        description="Time to resolve an alert, in hours per severity (sev1..sev4), each "
        "overridable alone; defaults are the mean-time-to-mitigation targets of the safety KPI "
        "reference (sev1 < 4 h, sev2 < 24 h).",
    )
    runbook_base_url: str = Field(
        "",
        description="Folder the report's runbook links point to, each link being this "
        "followed by <rule>.md: a URL, e.g. https://git.example.com/safewatch/blob/main/"
        "runbooks/ for a report that is mailed or shared, or a local folder. Empty: "
        "alerting.runbook_base_url followed by runbooks/ when that is set, else this "
        "repository's runbooks/ folder as a file:// URL, which opens from the report on the "
        "machine that wrote it.",
    )

    @field_validator("targets")
    @classmethod
    def _known_kpis(cls, value: dict[str, float]) -> dict[str, float]:
        valid = [r.id for r in RATES]
        unknown = sorted(k for k in value if k not in valid)
        if unknown:
            msg = f"report.targets names unknown KPI(s) {unknown}; valid rate ids: {valid}"
            raise ValueError(msg)
        outside = sorted(k for k, v in value.items() if not 0.0 <= v <= 1.0)
        if outside:
            msg = f"report.targets {outside} must be proportions between 0 and 1 (0.001 = 0.1 %)"
            raise ValueError(msg)
        return {**DEFAULT_KPI_TARGETS, **value}

    @field_validator("mttr_targets")
    @classmethod
    def _severities(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(k for k in value if not _SEVERITY.match(k))
        if unknown:
            msg = f"report.mttr_targets names unknown severities {unknown}; use sev1..sev4"
            raise ValueError(msg)
        if any(v <= 0 for v in value.values()):
            msg = "report.mttr_targets must be positive numbers of hours"
            raise ValueError(msg)
        return {**DEFAULT_MTTR_TARGETS_HOURS, **value}
