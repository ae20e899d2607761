"""Alert rules as code: the rule model, its YAML loader, a pure evaluator of window states,
and the engine that runs the rules on the warehouse and delivers their notices.

- `model`: rules, their conditions and vocabularies (severities); `loader`: the YAML files
  into rules, errors naming file and line; `templates`: summary and description text.
- `evaluate` (closed windows), `early` (open windows), `sequential` (the test behind early
  firing) and `inputs` (a rule's per-segment inputs from stored rows): pure.
- `engine` runs the rules in the batch's derivation; `store` holds the package's SQL;
  `outbox` delivers notices with retries, through `alertmanager_client` and a webhook.
- `ack` (acknowledgements), `backtest` (replays of history), `errors`.
"""
