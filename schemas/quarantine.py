"""Rows that a stage refused, with why. Rows in = rows out + rows quarantined."""

import pyarrow as pa

from schemas._base import columns, with_version

VERSION = "1"

QUARANTINE = with_version(
    pa.schema(
        [
            pa.field("stage", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),  # which input table the row came from
            pa.field("reason", pa.string(), nullable=False),  # one of the stage's Reason values
            pa.field("detail", pa.string()),
            pa.field("record", pa.string()),  # the offending row as JSON, for a person to read
        ]
    ),
    "quarantine",
    VERSION,
)

C = columns(QUARANTINE)
