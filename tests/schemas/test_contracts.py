"""Schemas are declared once and derived: Spark and HF types must follow the pyarrow declaration."""

import pyarrow as pa
import pytest

import schemas
from schemas._base import columns, schema_fingerprint
from schemas.convert import to_hf_features, to_spark


@pytest.mark.parametrize("name", sorted(schemas.ALL))
def test_spark_and_hf_types_follow_the_arrow_schema(name):
    schema = schemas.ALL[name]
    spark_type = to_spark(schema)
    assert [f.name for f in spark_type.fields] == schema.names
    assert [f.nullable for f in spark_type.fields] == [f.nullable for f in schema]
    if not any(pa.types.is_map(f.type) for f in schema):  # HF has no map type; catalogs never go to HF
        features = to_hf_features(schema)
        assert list(features) == schema.names


@pytest.mark.parametrize("name", sorted(schemas.ALL))
def test_every_schema_is_versioned(name):
    meta = schemas.ALL[name].metadata
    assert meta[b"sidpipe.schema"].decode() == name
    assert meta[b"sidpipe.schema_version"]


def test_column_namespace_and_fingerprint_track_the_declaration():
    schema = pa.schema([pa.field("a", pa.string(), nullable=False), pa.field("b", pa.int64())])
    assert columns(schema).a == "a" and columns(schema).b == "b"
    changed = pa.schema([pa.field("a", pa.string(), nullable=True), pa.field("b", pa.int64())])
    assert schema_fingerprint(schema) != schema_fingerprint(changed)


def test_curated_catalog_extends_the_raw_contract():
    assert schemas.CATALOG.names[: len(schemas.RAW_CATALOG.names)] == schemas.RAW_CATALOG.names
    assert schemas.INTERACTIONS.names[: len(schemas.RAW_INTERACTIONS.names)] == schemas.RAW_INTERACTIONS.names
