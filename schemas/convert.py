"""Derive Spark and Hugging Face types from the pyarrow schemas."""

from __future__ import annotations

import pyarrow as pa


def to_spark(schema: pa.Schema):
    """pyarrow schema -> Spark ``StructType`` (nullability preserved)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def to_hf_features(schema: pa.Schema):
    """pyarrow schema -> datasets ``Features``. HF drops non-null constraints: validation keeps them."""
    from datasets import Features

    return Features.from_arrow_schema(schema)


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
