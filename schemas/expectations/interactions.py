"""great-expectations suite for the curated interaction log (INTERACTIONS)."""

from __future__ import annotations

from schemas.expectations._ge import add_schema_expectations, new_suite
from schemas.interactions import INTERACTIONS, C

SUITE_NAME = "interactions"
ITEM_IN_CATALOG = "_item_in_catalog"  # derived: 1 when the item exists in the catalog, else 0


def prepare(interactions_df, catalog_df=None):
    """The validated view: the log plus, when the catalog is given, whether each item is in it."""
    from pyspark.sql import functions as F

    if catalog_df is None:
        return interactions_df
    known = catalog_df.select(F.col(C.item_id)).distinct().withColumn(ITEM_IN_CATALOG, F.lit(1))
    return interactions_df.join(known, on=C.item_id, how="left").fillna(0, subset=[ITEM_IN_CATALOG])


def build_suite(*, min_rows: int = 1, check_catalog: bool = False):
    import great_expectations.expectations as gxe

    suite = new_suite(SUITE_NAME)
    add_schema_expectations(suite, INTERACTIONS)
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=min_rows))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=C.seq_index, min_value=0))
    # seq_index is a position in the user's history: one event per position.
    suite.add_expectation(gxe.ExpectCompoundColumnsToBeUnique(column_list=[C.user_id, C.seq_index]))
    if check_catalog:
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeBetween(column=ITEM_IN_CATALOG, min_value=1, max_value=1)
        )
    return suite
