"""Reading and writing stage tables with their declared schema."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa

from schemas.convert import to_spark


def write_table(df, path: Path | str, schema: pa.Schema, *, partition_by: list[str] | None = None, num_files: int | None = None):
    """Write a Spark DataFrame as Parquet, projecting and casting to ``schema`` first.

    Files are written sorted within partitions by the caller; ``num_files`` coalesces for small
    tables so outputs are stable and readable (one file per table on the sample).
    """
    spark_schema = to_spark(schema)
    ordered = df.select([df[f.name].cast(f.dataType).alias(f.name) for f in spark_schema.fields])
    if num_files:
        ordered = ordered.coalesce(num_files)
    writer = ordered.write.mode("overwrite")
    for column in _vector_columns(schema):
        # Vectors never fit a dictionary: Parquet's writer would fill one per page, give up and write the
        # page plain anyway. Skipping the attempt writes the same bytes, a quarter faster.
        writer = writer.option(f"parquet.enable.dictionary#{column}.list.element", "false")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.parquet(str(path))
    if "://" not in str(path):
        canonicalize_part_files(Path(path))


def _vector_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)]


def write_empty_table(spark, path: Path | str, schema: pa.Schema) -> None:
    """The table :func:`write_table` writes for no rows; on a local path without a Spark job (a stage
    that already counted its rows, e.g. an empty quarantine, skips a job's fixed cost)."""
    if "://" in str(path):
        write_table(spark.createDataFrame([], to_spark(schema)), path, schema, num_files=1)
        return
    import shutil

    import pyarrow.parquet as pq

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    pq.write_table(schema.empty_table(), path / "part-00000.snappy.parquet", compression="snappy")


def canonicalize_part_files(path: Path) -> None:
    """Give Spark's part files stable names (no job UUID) and drop its _SUCCESS/.crc side files,
    so that the same data written twice is the same bytes under the same names."""
    for leaf in sorted({p.parent for p in path.rglob("part-*")}):
        parts = sorted(p for p in leaf.iterdir() if p.name.startswith("part-") and not p.name.endswith(".crc"))
        for index, part in enumerate(parts):
            suffix = "".join(part.suffixes[-2:]) if part.name.endswith(".snappy.parquet") else part.suffix
            part.rename(leaf / f"part-{index:05d}{suffix}")
    for side in list(path.rglob("*.crc")) + list(path.rglob("_SUCCESS")):
        side.unlink()


def read_table(spark, path: Path | str, schema: pa.Schema):
    """Read a table written by :func:`write_table` with its declared schema (no inference)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"expected table {schema.metadata.get(b'sidpipe.schema', b'?').decode()} at {path}; did its stage run?")
    return spark.read.schema(to_spark(schema)).parquet(str(path))


def fingerprint_path(path: Path | str, *, chunk: int = 1 << 20) -> str:
    """Content hash of a file or of every file under a directory (names + bytes), order-independent of listing."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]


def ensure_dir(path: Path | str) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_text(path: Path | str, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
