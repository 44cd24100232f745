"""Reading and writing stage tables with their declared schema."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import pyarrow as pa

from schemas.convert import to_spark


# Row groups are cut once about this much Arrow data is buffered (Spark's own writer aims at 128 MB).
ROW_GROUP_BYTES = 64 << 20
_TMP_MARK = ".tmp-"
WRITTEN_FILES = pa.schema([pa.field("file", pa.string()), pa.field("rows", pa.int64())])


def part_file(index: int) -> str:
    return f"part-{index:05d}.snappy.parquet"


def write_table(
    df, path: Path | str, schema: pa.Schema, *, num_files: int | None = None, sort_by: tuple[str, ...] = ()
) -> None:
    """Write a Spark DataFrame as Parquet files of ``schema``: the same rows in the same partitions give
    the same bytes, in any process and on any master.

    Each non-empty partition is written by pyarrow inside ``mapInArrow`` as ``part-<partition>.snappy.parquet``,
    its rows in the order the caller sorted them (``num_files`` coalesces small tables: one file per
    table on the sample). A task writes under a temporary name and renames when complete, so a retried
    task replaces its own file. Spark's Parquet writer is not used because its bytes differ between
    JVMs: parquet-java lists each column chunk's encodings out of an identity-hashed set, so two runs
    (or a local and a cluster run) of the same rows disagree in every footer.

    ``sort_by`` (columns with unique values) orders the rows across the files. A global ``orderBy``
    first runs a sampling job over the whole plan to find range bounds, so every Python UDF upstream
    would run twice: one file is instead one shuffled partition sorted in place (no sampling), and
    for more files the sorted input is persisted while the sampling job and the write read it.
    """
    spark_schema = to_spark(schema)
    ordered = df.select([df[f.name].cast(f.dataType).alias(f.name) for f in spark_schema.fields])
    persisted = None
    if sort_by and num_files == 1:
        ordered = ordered.repartition(1).sortWithinPartitions(*sort_by)
    elif sort_by:
        from pyspark import StorageLevel

        persisted = ordered.persist(StorageLevel.MEMORY_AND_DISK)
        ordered = persisted.orderBy(*sort_by)
    if num_files:
        ordered = ordered.coalesce(num_files)
    path = _fresh_dir(Path(path).resolve())
    try:
        written = ordered.mapInArrow(_partition_writer(str(path), schema), to_spark(WRITTEN_FILES)).collect()
    finally:
        if persisted is not None:
            persisted.unpersist()
    for leftover in path.glob(f"*{_TMP_MARK}*"):  # a failed task attempt's partial file
        leftover.unlink()
    if not written:
        _write_empty(path / part_file(0), schema)


def _partition_writer(root: str, schema: pa.Schema):
    def run(batches):
        from pyspark import TaskContext

        tc = TaskContext.get()
        index, attempt = (tc.partitionId(), tc.attemptNumber()) if tc else (0, 0)
        final = Path(root) / part_file(index)
        tmp = final.with_name(f"{final.name}{_TMP_MARK}{attempt}")
        pending, pending_bytes, rows, writer = [], 0, 0, None
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                pending.append(batch)
                pending_bytes += batch.nbytes
                rows += batch.num_rows
                if pending_bytes >= ROW_GROUP_BYTES:
                    writer = writer or _open_writer(tmp, schema)
                    _write_row_group(writer, pa.Table.from_batches(pending), schema)
                    pending, pending_bytes = [], 0
            if pending:
                writer = writer or _open_writer(tmp, schema)
                _write_row_group(writer, pa.Table.from_batches(pending), schema)
        finally:
            if writer is not None:
                writer.close()
        if writer is not None:
            os.replace(tmp, final)
            yield pa.RecordBatch.from_pylist([{"file": final.name, "rows": rows}], schema=WRITTEN_FILES)

    return run


def _file_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with nullable top-level columns, as Spark writes them: null checks belong to the
    gates, which name the rows, not to a writer failing mid-task."""
    return pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)


def _open_writer(path: Path, schema: pa.Schema):
    import pyarrow.parquet as pq

    return pq.ParquetWriter(str(path), _file_schema(schema), compression="snappy",
                            use_dictionary=_dictionary_columns(schema))


def _write_row_group(writer, table: pa.Table, schema: pa.Schema) -> None:
    columns = [table.column(f.name).cast(f.type) for f in schema]
    writer.write_table(pa.Table.from_arrays(columns, schema=_file_schema(schema)), row_group_size=table.num_rows)


def _write_empty(path: Path, schema: pa.Schema) -> None:
    _open_writer(path, schema).close()


@functools.lru_cache(maxsize=None)
def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Leaf column paths worth a dictionary: every one but float vectors, which never fit one (the
    writer would fill a dictionary page, give up and write the rest plain anyway)."""
    import io

    import pyarrow.parquet as pq

    vectors = {f.name for f in schema if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)}
    sink = io.BytesIO()
    pq.write_table(schema.empty_table(), sink)
    leaves = pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
    return [leaves.column(i).path for i in range(len(leaves)) if leaves.column(i).path.split(".")[0] not in vectors]


def write_empty_table(path: Path | str, schema: pa.Schema) -> None:
    """The table :func:`write_table` writes for no rows, without a Spark job (a stage that already
    counted its rows, e.g. an empty quarantine, skips a job's fixed cost)."""
    _write_empty(_fresh_dir(Path(path)) / part_file(0), schema)


def _fresh_dir(path: Path) -> Path:
    """``path`` as an empty folder: a table is overwritten whole."""
    import shutil

    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


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
