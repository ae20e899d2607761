"""Data-quality expectation suites, kept as data and generated from the event contract.

`interaction_event_v1.suite.json` is the Great Expectations suite run on each micro-batch; it is
produced by `pipelines.quality.suite.suite_from_json_schema` from `interaction_event/v1.json`
(regenerate with `python -m pipelines.quality.suite`) and must not be edited by hand.
"""
