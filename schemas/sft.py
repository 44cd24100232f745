"""Instruction SFT records (TRL chat format plus instruction/input/output)."""

import pyarrow as pa

from schemas._base import columns, with_version

VERSION = "2"  # 2: item_ids appended

MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

SFT_RECORDS = with_version(
    pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("task", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("messages", pa.list_(MESSAGE), nullable=False),
            pa.field("instruction", pa.string(), nullable=False),
            pa.field("input", pa.string()),
            pa.field("output", pa.string(), nullable=False),
            pa.field("user_id", pa.string()),
            pa.field("target_item_ids", pa.list_(pa.string())),
            pa.field("sids", pa.list_(pa.string())),  # every SID mentioned anywhere in the record
            pa.field("metadata", pa.string()),  # JSON object: template id, derived-query flag, ...
            # every catalog item the record refers to, by SID or by title (the leakage validator's input)
            pa.field("item_ids", pa.list_(pa.string())),
        ]
    ),
    "sft_records",
    VERSION,
)

C = columns(SFT_RECORDS)

SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = SPLITS
ROLES = ("system", "user", "assistant", "tool")
