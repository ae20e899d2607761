"""The interaction-event contract: validation and the Spark schema, both from schemas/."""

from pipelines.contract.spark_schema import spark_schema_from_json_schema
from pipelines.contract.validate import validate_event

__all__ = ["spark_schema_from_json_schema", "validate_event"]
