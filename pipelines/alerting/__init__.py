"""Alert rules as code: YAML rules, their loader, and a pure evaluator of window states."""
