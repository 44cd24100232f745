"""great-expectations suite for the curated catalog (CATALOG): ids unique and non-null, text present."""

from __future__ import annotations

from schemas.catalog import CATALOG, C
from schemas.expectations._ge import add_schema_expectations, new_suite

SUITE_NAME = "catalog"
TEXT_CHARS = "_text_chars"  # derived: characters of title + description after trimming


def prepare(catalog_df):
    """The validated view: the catalog plus the length of its text."""
    from pyspark.sql import functions as F

    text = F.trim(F.concat_ws(" ", F.col(C.title), F.col(C.description)))
    return catalog_df.withColumn(TEXT_CHARS, F.length(text))


def build_suite(*, min_rows: int = 1, min_text_share: float = 1.0):
    import great_expectations.expectations as gxe

    suite = new_suite(SUITE_NAME)
    add_schema_expectations(suite, CATALOG)
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=min_rows))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=C.item_id))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column=TEXT_CHARS, min_value=1, mostly=min_text_share)
    )
    return suite
