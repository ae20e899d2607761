"""Data quality of each micro-batch, checked by a Great Expectations suite.

`pipelines.quality.suite`: the suite, derived from the event contract and kept in
schemas/quality/ as data, and `flatten_events` (events -> the flat frame it checks).
`pipelines.quality.runner`: `BatchValidator`, which runs the suite on one frame with a
bounded cost, and `QualityResult`.

Nothing is imported here, so that `python -m pipelines.quality.suite` (which regenerates the
suite file) runs cleanly and reading the suite does not import Great Expectations.
"""
