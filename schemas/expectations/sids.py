"""great-expectations suite for the SID table (SIDS): one per item, codes in range, injective, fixed length."""

from __future__ import annotations

from schemas.expectations._ge import add_schema_expectations, new_suite
from schemas.sids import SIDS, C

SUITE_NAME = "sids"
CODES_LEN = "_codes_len"
CODES_MIN = "_codes_min"
CODES_MAX = "_codes_max"
SID_LEN = "_sid_len"
SID_MIN = "_sid_min"
SID_KEY = "_sid_key"  # derived: the resolved SID as one string, so uniqueness is a column check


def prepare(sids_df):
    from pyspark.sql import functions as F

    return (
        sids_df.withColumn(CODES_LEN, F.size(C.codes))
        .withColumn(CODES_MIN, F.array_min(C.codes))
        .withColumn(CODES_MAX, F.array_max(C.codes))
        .withColumn(SID_LEN, F.size(C.sid))
        .withColumn(SID_MIN, F.array_min(C.sid))
        .withColumn(SID_KEY, F.concat_ws("-", F.col(C.sid).cast("array<string>")))
    )


def build_suite(
    *, num_levels: int | None = None, codebook_size: int | None = None, expected_rows: int | None = None
):
    """``num_levels``/``codebook_size`` pin the code shape when known; ``expected_rows`` is the catalog size."""
    import great_expectations.expectations as gxe

    suite = new_suite(SUITE_NAME)
    add_schema_expectations(suite, SIDS)
    if expected_rows is not None:
        suite.add_expectation(gxe.ExpectTableRowCountToEqual(value=expected_rows))
    else:
        suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=1))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=C.item_id))
    # Fixed length: one distinct length, equal to the number of levels when known.
    suite.add_expectation(
        gxe.ExpectColumnUniqueValueCountToBeBetween(column=CODES_LEN, min_value=1, max_value=1)
    )
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column=CODES_LEN, min_value=num_levels or 1, max_value=num_levels)
    )
    suite.add_expectation(
        gxe.ExpectColumnUniqueValueCountToBeBetween(column=SID_LEN, min_value=1, max_value=1)
    )
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=CODES_MIN, min_value=0))
    if codebook_size is not None:
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeBetween(column=CODES_MAX, max_value=codebook_size - 1)
        )
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=SID_MIN, min_value=0))
    # Injective after resolution: no two items share a resolved SID or its rendering.
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=SID_KEY))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=C.sid_tokens))
    suite.add_expectation(
        gxe.ExpectColumnUniqueValueCountToBeBetween(column=C.codebook_id, min_value=1, max_value=1)
    )
    return suite
