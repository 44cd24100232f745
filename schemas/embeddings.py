"""Item embeddings: one row per item and space."""

import pyarrow as pa

from schemas._base import columns, with_version

VERSION = "1"

EMBEDDINGS = with_version(
    pa.schema(
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32()), nullable=False),
            pa.field("space", pa.string(), nullable=False),  # "text" | "collaborative" | "fused"
            pa.field("text_hash", pa.string()),  # hash of the rendered text the vector came from
            pa.field("model_fingerprint", pa.string()),  # which model/space produced it
        ]
    ),
    "embeddings",
    VERSION,
)

C = columns(EMBEDDINGS)

# The embed stage's incremental cache (one directory per encoder fingerprint): the vector of each
# rendered text, keyed by the text's hash. Same column names and types as EMBEDDINGS.
EMBEDDING_CACHE = with_version(
    pa.schema([EMBEDDINGS.field(C.text_hash).with_nullable(False), EMBEDDINGS.field(C.embedding)]),
    "embedding_cache",
    VERSION,
)
