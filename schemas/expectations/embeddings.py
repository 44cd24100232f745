"""great-expectations suite for item embeddings (EMBEDDINGS): constant dimension, unit norm, no NaN."""

from __future__ import annotations

from schemas.embeddings import EMBEDDINGS, C
from schemas.expectations._ge import add_schema_expectations, new_suite

SUITE_NAME = "embeddings"
DIM = "_dim"  # derived: vector length
NORM = "_norm"  # derived: L2 norm
NON_FINITE = "_non_finite"  # derived: NaN, infinite or null elements
DIMS_IN_SPACE = "_dims_in_space"  # derived: distinct vector lengths within the row's space


def prepare(embeddings_df):
    """The validated view: the table plus per-row dimension, norm and count of non-finite elements.

    The per-space dimension count is a tiny aggregate joined back (broadcast), so a mismatch
    shows up on every row of the offending space.
    """
    from pyspark.sql import functions as F

    vec = F.col(C.embedding)
    view = (
        embeddings_df.withColumn(DIM, F.size(vec))
        .withColumn(
            NORM,
            F.sqrt(
                F.aggregate(
                    vec, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x.cast("double")
                )
            ),
        )
        .withColumn(
            NON_FINITE, F.size(F.filter(vec, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf"))))
        )
    )
    dims = view.groupBy(C.space).agg(F.countDistinct(DIM).alias(DIMS_IN_SPACE))
    return view.join(F.broadcast(dims), on=C.space, how="left")


def build_suite(
    *,
    name: str = SUITE_NAME,
    min_rows: int = 1,
    unit_norm: bool = True,
    norm_tolerance: float = 1e-3,
    spaces: list[str] | None = None,
):
    import great_expectations.expectations as gxe

    suite = new_suite(name)
    add_schema_expectations(suite, EMBEDDINGS)
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=min_rows))
    suite.add_expectation(gxe.ExpectCompoundColumnsToBeUnique(column_list=[C.item_id, C.space]))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=NON_FINITE, min_value=0, max_value=0))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=DIM, min_value=1))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=DIMS_IN_SPACE, min_value=1, max_value=1))
    if unit_norm:
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeBetween(
                column=NORM, min_value=1.0 - norm_tolerance, max_value=1.0 + norm_tolerance
            )
        )
    if spaces:
        suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=C.space, value_set=sorted(spaces)))
    return suite
