"""Read any supported input into one shape: (_file, _pos, _record), where _record is the row as JSON.

Turning every format into JSON records lets one validator (jobs.ingest.records) judge them all, and
(_file, _pos) keeps the order of the log for interaction logs without timestamps.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from jobs.ingest.lcrec import iter_lcrec_interactions, iter_lcrec_items

FILE, POS, RECORD = "_file", "_pos", "_record"
RAW_SHAPE = StructType([StructField(FILE, StringType()), StructField(POS, LongType()), StructField(RECORD, StringType())])

FORMATS = ("parquet", "jsonl", "csv", "lcrec")


class InputError(ValueError):
    """An input path or format is unusable; raised before Spark starts any work."""


def detect_format(path: str, declared: str = "auto") -> str:
    if declared != "auto":
        if declared not in FORMATS:
            raise InputError(f"unknown input format {declared!r}; expected one of {', '.join(FORMATS)}")
        return declared
    name = path.rstrip("/").lower()
    if name.endswith((".item.json", ".inter.json")):
        return "lcrec"
    for suffix, fmt in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".csv", "csv")):
        if name.endswith(suffix) or name.endswith(suffix + ".gz"):
            return fmt
    local = Path(path)
    if local.is_dir():
        names = {p.suffix for p in local.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))}
        for suffix, fmt in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv")):
            if suffix in names:
                return fmt
    raise InputError(f"cannot tell the format of {path}; pass --format parquet|jsonl|csv|lcrec")


def check_input_exists(path: str) -> None:
    if not path:
        raise InputError("no input path given")
    if "://" not in path and not Path(path).exists():
        raise InputError(f"input not found: {path}")


def _with_position(df: DataFrame) -> DataFrame:
    # monotonically_increasing_id grows with the position inside each file split, and splits of one file
    # keep their offset order, so (file, id) is the order of the log.
    return df.withColumn(FILE, F.col("_metadata.file_path")).withColumn(POS, F.monotonically_increasing_id())


def read_raw(spark: SparkSession, path: str, fmt: str, *, kind: str) -> DataFrame:
    """Read ``path`` as ``fmt`` into the (_file, _pos, _record) shape. ``kind`` is catalog|interactions."""
    check_input_exists(path)
    fmt = detect_format(path, fmt)
    if fmt == "jsonl":
        lines = _with_position(spark.read.text(path))
        # Blank lines are not records; they are dropped here and nowhere else.
        return lines.where(F.trim(F.col("value")) != "").select(FILE, POS, F.col("value").alias(RECORD))
    if fmt in ("parquet", "csv"):
        reader = spark.read.option("header", "true").option("mode", "PERMISSIVE") if fmt == "csv" else spark.read
        df = _with_position(reader.csv(path) if fmt == "csv" else reader.parquet(path))
        data_cols = [c for c in df.columns if c not in (FILE, POS)]
        return df.select(FILE, POS, F.to_json(F.struct(*data_cols)).alias(RECORD))
    if fmt == "lcrec":
        import json

        rows = iter_lcrec_items(path) if kind == "catalog" else iter_lcrec_interactions(path)
        data = [(path, i, json.dumps(row, ensure_ascii=False)) for i, row in enumerate(rows)]
        return spark.createDataFrame(data, RAW_SHAPE)
    raise InputError(f"unsupported format {fmt}")
