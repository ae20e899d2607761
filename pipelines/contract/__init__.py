"""The interaction-event contract, all from schemas/: the fate of every record (`reasons`),
what the schema shapes (`shapes`), the batch record checks (`records`, with the vectorised
`columns`), the explanation of one record's violations (`detailed`), validation of one
event (`validate`) and the Spark schema (`spark_schema`).
"""
