"""The streaming aggregation as functions over DataFrames: parse, classify, aggregate."""
