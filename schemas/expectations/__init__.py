"""great-expectations suites, one per schema, living next to the schemas they check.

Each module has ``SUITE_NAME``, ``prepare(df, ...)`` (the Spark view the suite validates: the
table plus derived per-row columns) and ``build_suite(...)`` (thresholds as arguments).
:func:`schemas.expectations._ge.validate_dataframe` runs one with GE's Spark datasource.
"""

from schemas.expectations._ge import ExpectationFailure, SuiteOutcome, validate_dataframe

__all__ = ["ExpectationFailure", "SuiteOutcome", "validate_dataframe"]
