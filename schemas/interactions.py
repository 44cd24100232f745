"""Interaction log: one row per (user, item, event)."""

import pyarrow as pa

from schemas._base import columns, with_version

VERSION = "1"

RAW_INTERACTIONS = with_version(
    pa.schema(
        [
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("event_type", pa.string()),
            pa.field("timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("query", pa.string()),
            pa.field("session_id", pa.string()),
        ]
    ),
    "raw_interactions",
    VERSION,
)

# Curated log: `seq_index` is the 0-based position of the event in the user's history, ordered by
# timestamp when the log has them and by the order in the log when it does not.
INTERACTIONS = with_version(
    pa.schema(list(RAW_INTERACTIONS) + [pa.field("seq_index", pa.int64(), nullable=False)]),
    "interactions",
    VERSION,
)

C = columns(INTERACTIONS)

DEFAULT_EVENT_TYPE = "interaction"
