"""great-expectations suite for the SFT corpus (SFT_RECORDS).

Non-empty prompts and answers, every SID a record mentions exists in the SID table, and no test
target of a user is visible in a training record of the same user. The last two need other tables:
:func:`prepare` takes per-record counts computed by Spark joins (``jobs.check.transform``).
"""

from __future__ import annotations

from schemas.expectations._ge import add_schema_expectations, new_suite
from schemas.sft import SFT_RECORDS, SPLITS, C

SUITE_NAME = "sft_records"
PROMPT_CHARS = "_prompt_chars"
ANSWER_CHARS = "_answer_chars"
EMPTY_MESSAGES = "_empty_messages"  # derived: messages whose content is null or blank
MESSAGE_COUNT = "_message_count"
UNKNOWN_SIDS = "_unknown_sids"  # derived: SIDs in the record that are not in the SID table
LEAKED_TEST_TARGETS = "_leaked_test_targets"  # derived: the user's test targets visible in this train record


def prepare(sft_df, record_issues_df=None):
    """The validated view. ``record_issues_df`` has columns (id, UNKNOWN_SIDS, LEAKED_TEST_TARGETS)
    for records with a problem only; records absent from it get 0."""
    from pyspark.sql import functions as F

    view = (
        sft_df.withColumn(PROMPT_CHARS, F.length(F.trim(F.col(C.instruction))))
        .withColumn(ANSWER_CHARS, F.length(F.trim(F.col(C.output))))
        .withColumn(MESSAGE_COUNT, F.size(C.messages))
        .withColumn(
            EMPTY_MESSAGES,
            F.size(
                F.filter(C.messages, lambda m: m["content"].isNull() | (F.length(F.trim(m["content"])) == 0))
            ),
        )
    )
    if record_issues_df is None:
        return view.withColumn(UNKNOWN_SIDS, F.lit(0)).withColumn(LEAKED_TEST_TARGETS, F.lit(0))
    return view.join(record_issues_df, on=C.id, how="left").fillna(
        0, subset=[UNKNOWN_SIDS, LEAKED_TEST_TARGETS]
    )


def build_suite(*, min_rows: int = 1):
    import great_expectations.expectations as gxe

    suite = new_suite(SUITE_NAME)
    add_schema_expectations(suite, SFT_RECORDS)
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=min_rows))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=C.id))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=C.split, value_set=list(SPLITS)))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=PROMPT_CHARS, min_value=1))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=ANSWER_CHARS, min_value=1))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=MESSAGE_COUNT, min_value=2))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=EMPTY_MESSAGES, min_value=0, max_value=0))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=UNKNOWN_SIDS, min_value=0, max_value=0))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column=LEAKED_TEST_TARGETS, min_value=0, max_value=0)
    )
    return suite
