"""The interaction-event contract: the fate of every record (`reasons`), the record checks
(`records`, `columns`), validation of one event (`validate`) and the Spark schema
(`spark_schema`), all from schemas/.
"""
