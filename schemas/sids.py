"""Semantic IDs: one row per item."""

import pyarrow as pa

from schemas._base import columns, with_version

VERSION = "2"

SIDS = with_version(
    pa.schema(
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("codes", pa.list_(pa.int32()), nullable=False),  # raw quantizer codes, one per level
            pa.field("sid", pa.list_(pa.int32()), nullable=False),  # after collision resolution, fixed length
            pa.field("sid_tokens", pa.string(), nullable=False),  # rendered for the LLM, e.g. <a_1><b_2><c_3>
            pa.field("item_token", pa.string()),  # hybrid tokenization: unique per item
            pa.field("resolution", pa.string()),  # how the raw codes were changed, null when untouched
            pa.field("codebook_id", pa.string(), nullable=False),
            # added in v2 (nullable, appended): the text the embedding came from, so a frozen-codebook
            # rerun can tell unchanged items (same item_id and text_hash) from changed ones
            pa.field("text_hash", pa.string()),
        ]
    ),
    "sids",
    VERSION,
)

C = columns(SIDS)
