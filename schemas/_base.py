"""Helpers shared by the schema modules."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pyarrow as pa


def columns(schema: pa.Schema) -> SimpleNamespace:
    """A namespace whose attributes are the schema's column names (``C.item_id == "item_id"``).

    Code refers to columns as ``C.item_id`` so a rename in the schema is a rename everywhere.
    """
    return SimpleNamespace(**{name: name for name in schema.names})


def with_version(schema: pa.Schema, name: str, version: str) -> pa.Schema:
    return schema.with_metadata({b"sidpipe.schema": name.encode(), b"sidpipe.schema_version": version.encode()})


def schema_fingerprint(schema: pa.Schema) -> str:
    """Stable hash of names, types and nullability (metadata excluded)."""
    text = "|".join(f"{f.name}:{f.type}:{f.nullable}" for f in schema)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def required_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if not f.nullable]
