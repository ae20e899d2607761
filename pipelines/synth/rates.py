"""The base rates of the synthetic event stream, in one place so they are easy to override."""

from __future__ import annotations

from dataclasses import dataclass, fields

# Fields that are not probabilities; every other field must lie in [0, 1].
_NOT_PROBABILITIES = {
    "regulated_refusal_factor": 0.0,
    "tool_calls_mean": 1.0,
    "latency_median_ms": 0.0,
    "latency_sigma": 0.0,
    "input_tokens_median": 0.0,
    "input_tokens_sigma": 0.0,
    "output_tokens_median": 0.0,
    "output_tokens_sigma": 0.0,
}


@dataclass(frozen=True)
class BaseRates:
    """Probabilities (per event unless stated) that the synthetic generator draws from.

    Chosen to sit near the production figures in `shared/reference/safety-kpis.md`: harmful
    output around 0.1–0.3 % (target < 0.1 %, so the default stream sits slightly above
    target, as real ones do), refusals 3–5 % (more in the regulated tier), injection attempts
    about 1 % overall with a few % success, jailbreak success < 5 %, PII leakage "near zero".

    How the generator uses them (the rules the tests recompute the expectation from):

    - jailbreak attempt ~ `jailbreak_attempt`; success | attempt ~ `jailbreak_success`.
    - injection attempt ~ `injection_attempt` on plain features, `injection_attempt_rag` on
      retrieval features, `injection_attempt_agent` on tool-using features; success |
      attempt ~ `injection_success`.
    - violation (non-empty `flagged_categories`) ~ `violation_given_jailbreak` when the
      jailbreak succeeded, else `harmful_output`; a violation gets a second category with
      `second_category`.
    - a violation flagged only for `privacy` is redacted; any other is blocked with
      `block_given_violation`, else flagged.
    - refusal (only drawn for non-violating events) ~ `refusal_given_jailbreak` for a failed
      jailbreak attempt, else `refusal`, times `regulated_refusal_factor` in the regulated tier.
    - error outcome (only for events neither violating nor refused) ~ `error`.
    - PII in output ~ `pii_in_output`; entities redacted from the prompt ~ `prompt_entities`.
    - user report ~ `user_report_given_violation` on a violation, else `user_report`.
    - appeal overturned ~ `appeal_overturned` on blocked or refused events, never otherwise.
    - tool calls (agent features only): 1 + geometric number of calls with mean
      `tool_calls_mean`; each call is blocked with `tool_call_blocked`, else executed without
      authorization with `tool_call_unauthorized`; a successful injection on an agent
      feature adds an unauthorized call with `unauthorized_given_injection`.
    - excerpts attached with `excerpt`, or `excerpt_flagged` when anything was detected.
    """

    harmful_output: float = 0.002
    second_category: float = 0.1
    violation_given_jailbreak: float = 0.5
    block_given_violation: float = 0.6
    refusal: float = 0.035
    regulated_refusal_factor: float = 1.6
    refusal_given_jailbreak: float = 0.75
    error: float = 0.002
    injection_attempt: float = 0.006
    injection_attempt_rag: float = 0.02
    injection_attempt_agent: float = 0.03
    injection_success: float = 0.03
    jailbreak_attempt: float = 0.005
    jailbreak_success: float = 0.04
    pii_in_output: float = 0.0002
    prompt_entities: float = 0.06
    user_report: float = 0.003
    user_report_given_violation: float = 0.08
    appeal_overturned: float = 0.02
    tool_calls_mean: float = 2.5
    tool_call_blocked: float = 0.03
    tool_call_unauthorized: float = 0.002
    unauthorized_given_injection: float = 0.5
    excerpt: float = 0.03
    excerpt_flagged: float = 0.5
    latency_median_ms: float = 800.0
    latency_sigma: float = 0.6
    input_tokens_median: float = 300.0
    input_tokens_sigma: float = 0.9
    output_tokens_median: float = 250.0
    output_tokens_sigma: float = 0.8

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _NOT_PROBABILITIES:
                if not value >= _NOT_PROBABILITIES[f.name]:
                    msg = f"BaseRates.{f.name} must be >= {_NOT_PROBABILITIES[f.name]}, got {value}"
                    raise ValueError(msg)
            elif not 0.0 <= value <= 1.0:
                msg = f"BaseRates.{f.name} is a probability and must lie in [0, 1], got {value}"
                raise ValueError(msg)
        if self.refusal * self.regulated_refusal_factor > 1.0:
            msg = "BaseRates.refusal * regulated_refusal_factor must not exceed 1"
            raise ValueError(msg)
