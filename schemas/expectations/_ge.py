"""Running a great-expectations 1.x suite on a Spark DataFrame (small ones locally), and reading its result.

One ephemeral GX context per process (creating data sources is cheap; contexts are not free). Each
suite validates a *view* of a table: the table's own columns plus per-row derived columns (vector
norm, code range, ...) computed by Spark, so every check is a column expectation that GE's Spark
execution engine evaluates as distributed aggregates; only a bounded list of example failing
values comes back to the driver.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas._base import required_columns

_CONTEXT = None
_DATASOURCE = "sidpipe_spark"
_LOCAL_DATASOURCE = "sidpipe_pandas"
SPARK, PANDAS = "spark", "pandas"

# Keys of GE's result JSON that change on every run (random ids, wall-clock load time); dropped so
# that the same data gives byte-identical validation files.
_VOLATILE_KEYS = {"id", "batch_markers", "ge_load_time", "run_id", "validation_time"}


def gx_context():
    """The process-wide ephemeral GX context, with analytics and progress bars off."""
    global _CONTEXT
    if _CONTEXT is None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types import base
        from great_expectations.data_context.types.base import ProgressBarsConfig

        # GX pins this module's logger at INFO on import, past the WARNING every other library logs at
        # (jobs.common.logs); it would announce a temp folder on every gate.
        logging.getLogger(base.__name__).setLevel(logging.WARNING)
        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False)
    return _CONTEXT


def new_suite(name: str):
    """A fresh suite registered in the context (replacing one of the same name: thresholds change)."""
    import great_expectations as gx

    context = gx_context()
    if any(existing.name == name for existing in context.suites.all()):
        context.suites.delete(name)
    return context.suites.add(gx.ExpectationSuite(name=name))


def add_schema_expectations(suite, schema: pa.Schema) -> None:
    """Every column of the schema exists; every non-nullable one has no nulls (HF and Parquet drop that)."""
    import great_expectations.expectations as gxe

    for name in schema.names:
        suite.add_expectation(gxe.ExpectColumnToExist(column=name))
    for name in required_columns(schema):
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=name))


@dataclass
class ExpectationFailure:
    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_examples: list[Any] = field(default_factory=list)
    exception: str | None = None

    def describe(self) -> str:
        bounds = {k: v for k, v in self.kwargs.items() if k not in ("batch_id", "column", "column_list")}
        where = f" on {self.column}" if self.column else ""
        parts = [f"{self.expectation}{where}"]
        if bounds:
            parts.append("expected " + ", ".join(f"{k}={_num(v)}" for k, v in sorted(bounds.items())))
        if self.observed is not None:
            parts.append(f"observed {self.observed}")
        if self.unexpected_count is not None:
            parts.append(f"{self.unexpected_count} unexpected rows")
        if self.unexpected_examples:
            parts.append(f"e.g. {self.unexpected_examples[:5]}")
        if self.exception:
            parts.append(f"error: {self.exception.splitlines()[0][:300]}")
        return "; ".join(parts)


@dataclass
class SuiteOutcome:
    suite: str
    success: bool
    evaluated: int
    failures: list[ExpectationFailure]
    result_json: dict[str, Any]
    path: Path | None = None
    engine: str = SPARK

    def summary(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "engine": self.engine,
            "evaluated": self.evaluated,
            "failed": len(self.failures),
            "failures": [f.describe() for f in self.failures],
            "results_path": str(self.path) if self.path else None,
        }

    def describe_failures(self) -> str:
        return "; ".join(f"[{self.suite}] {f.describe()}" for f in self.failures)


def validate_dataframe(
    df, suite, *, partial_unexpected_count: int = 20, out_dir: Path | None = None, local_max_rows: int = 0
) -> SuiteOutcome:
    """Validate a Spark DataFrame against ``suite`` with great-expectations.

    A view of at most ``local_max_rows`` rows is collected once and validated by GE's pandas engine:
    GE's Spark engine runs several Spark jobs per expectation, whose fixed cost dominates on small
    tables (seconds per suite on a few hundred rows). Larger views (and ``local_max_rows=0``) are
    validated where they are, by GE's Spark engine, as distributed aggregates. The view is persisted
    for the duration and released after. When ``out_dir`` is given the result JSON is written there as
    ``<suite name>.json``.
    """
    from pyspark import StorageLevel

    view = df.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # Counted first: collecting a large view's first rows only to discard them would move up to
        # local_max_rows wide rows to the driver for nothing.
        if local_max_rows > 0 and view.limit(local_max_rows + 1).count() <= local_max_rows:
            engine, batch = (
                PANDAS,
                _batch_definition(_LOCAL_DATASOURCE, suite.name).get_batch(
                    batch_parameters={"dataframe": view.toArrow().to_pandas()}
                ),
            )
        else:
            engine, batch = (
                SPARK,
                _batch_definition(_DATASOURCE, suite.name).get_batch(batch_parameters={"dataframe": view}),
            )
        result = batch.validate(
            suite,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": partial_unexpected_count},
        )
    finally:
        view.unpersist()
    result_json = _strip_volatile(result.to_json_dict())
    outcome = SuiteOutcome(
        suite=suite.name,
        success=bool(result.success),
        evaluated=len(result_json.get("results", [])),
        failures=[_failure(r) for r in result_json.get("results", []) if not r.get("success")],
        result_json=result_json,
        engine=engine,
    )
    if out_dir is not None:
        from jobs.common.io import atomic_write_text

        outcome.path = Path(out_dir) / f"{suite.name}.json"
        atomic_write_text(outcome.path, json.dumps(result_json, indent=2, sort_keys=True, default=str))
    return outcome


def _batch_definition(datasource_name: str, asset_name: str):
    """The whole-dataframe batch definition of ``asset_name`` in the named Spark or pandas datasource."""
    context = gx_context()
    try:
        datasource = context.data_sources.get(datasource_name)
    except (KeyError, ValueError, LookupError):
        add = (
            context.data_sources.add_spark
            if datasource_name == _DATASOURCE
            else context.data_sources.add_pandas
        )
        datasource = add(datasource_name)
    try:
        asset = datasource.get_asset(asset_name)
    except (KeyError, ValueError, LookupError):
        asset = datasource.add_dataframe_asset(asset_name)
    try:
        return asset.get_batch_definition("whole")
    except (KeyError, ValueError, LookupError):
        return asset.add_batch_definition_whole_dataframe("whole")


def _num(value: Any) -> Any:
    return f"{value:g}" if isinstance(value, float) else value


def _failure(result: dict[str, Any]) -> ExpectationFailure:
    config = result.get("expectation_config", {})
    kwargs = dict(config.get("kwargs", {}))
    details = result.get("result") or {}
    exception = (result.get("exception_info") or {}).get("exception_message")
    column = kwargs.get("column") or (",".join(kwargs["column_list"]) if kwargs.get("column_list") else None)
    return ExpectationFailure(
        expectation=config.get("type", "?"),
        column=column,
        kwargs=kwargs,
        observed=details.get("observed_value"),
        unexpected_count=details.get("unexpected_count"),
        unexpected_examples=list(details.get("partial_unexpected_list") or []),
        exception=exception,
    )


def _strip_volatile(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_volatile(v) for k, v in obj.items() if k not in _VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_strip_volatile(v) for v in obj]
    return obj
