"""The segment vocabulary shared by the job, the warehouse and the settings, with no
dependencies: the Python workers import it, and with it neither pydantic (the settings) nor
SQLAlchemy (the warehouse tables), which cost a cold worker about half a second.
"""

from __future__ import annotations

# The dimensions an aggregate can be grouped by, in the warehouse's column order.
SEGMENT_DIMENSIONS = (
    "product_surface",
    "feature",
    "model_id",
    "model_version",
    "prompt_version",
    "policy_version",
    "locale",
    "region",
    "risk_tier",
    "client",
    "user_cohort",
)

ALL_DIMENSIONS_VALUE = "*"  # value of a dimension the aggregate is not grouped by
