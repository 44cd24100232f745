"""Catalog snapshot: one row per item after ingest."""

import pyarrow as pa

from schemas._base import columns, with_version

VERSION = "1"

# What ingest accepts. Every field but item_id is optional in the raw input; types are what the
# readers coerce to (bad values go to quarantine, not to nulls).
RAW_CATALOG = with_version(
    pa.schema(
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("title", pa.string()),
            pa.field("description", pa.string()),
            pa.field("brand", pa.string()),
            pa.field("category_path", pa.list_(pa.string())),
            pa.field("price", pa.float64()),
            pa.field("attributes", pa.map_(pa.string(), pa.string())),
            pa.field("updated_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    "raw_catalog",
    VERSION,
)

# Curated catalog: unique item_id, normalised text; `text_hash` fingerprints the item's text fields
# so later stages (embedding cache, churn reports) can tell changed items from unchanged ones.
CATALOG = with_version(
    pa.schema(
        list(RAW_CATALOG)
        + [
            pa.field("text_hash", pa.string(), nullable=False),
        ]
    ),
    "catalog",
    VERSION,
)

C = columns(CATALOG)
