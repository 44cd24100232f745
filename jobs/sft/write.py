"""Writing the corpus: ``<root>/split=<s>/task=<t>/part-00000.parquet``, in one Spark job.

Spark's own ``partitionBy`` would strip ``split`` and ``task`` out of the data files, and then
``load_dataset("parquet", data_files=...)`` (which knows nothing of hive directories) would load
records without them. So each (split, task) group is written, with every SFT_RECORDS column, by a
pyarrow writer inside ``mapInArrow``: the records are hash-partitioned by (split, task), so each group
lives in exactly one partition, sorted by record id, and the file is byte-identical across runs.
The job returns one small row per file (split, task, rows).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame

from schemas.convert import to_spark
from schemas.sft import SFT_RECORDS, SPLITS
from schemas.sft import C as R

ROWS_PER_GROUP = 65_536
FILE_NAME = "part-00000.parquet"
WRITTEN = pa.schema([pa.field(R.split, pa.string()), pa.field(R.task, pa.string()), pa.field("rows", pa.int64())])


def group_dir(root: Path | str, split: str, task: str) -> Path:
    return Path(root) / f"{R.split}={split}" / f"{R.task}={task}"


def _write_groups(root: str):
    names = SFT_RECORDS.names

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        writer, key, rows, pending = None, None, 0, []

        def flush():
            nonlocal pending
            if pending:
                writer.write_table(pa.Table.from_batches(pending).select(names).cast(SFT_RECORDS), row_group_size=ROWS_PER_GROUP)
                pending = []

        def close():
            nonlocal writer
            if writer is not None:
                flush()
                writer.close()
                writer = None
                return pa.RecordBatch.from_pylist([{R.split: key[0], R.task: key[1], "rows": rows}], schema=WRITTEN)
            return None

        for batch in batches:
            splits, tasks = batch.column(R.split).to_pylist(), batch.column(R.task).to_pylist()
            start = 0
            for i in range(1, len(splits) + 1):
                if i < len(splits) and (splits[i], tasks[i]) == (splits[start], tasks[start]):
                    continue
                group = (splits[start], tasks[start])
                if group != key:
                    done = close()
                    if done is not None:
                        yield done
                    path = group_dir(root, *group)
                    path.mkdir(parents=True, exist_ok=True)
                    writer, key, rows = pq.ParquetWriter(str(path / FILE_NAME), SFT_RECORDS, compression="snappy"), group, 0
                pending.append(batch.slice(start, i - start))
                rows += i - start
                if sum(b.num_rows for b in pending) >= ROWS_PER_GROUP:
                    flush()
                start = i
        done = close()
        if done is not None:
            yield done

    return run


def write_corpus(records: DataFrame, root: Path | str, *, partitions: int) -> dict[str, dict[str, int]]:
    """Write every (split, task) group; returns task -> split -> rows."""
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    ordered = records.select(*SFT_RECORDS.names).repartition(partitions, R.split, R.task).sortWithinPartitions(R.split, R.task, R.id)
    written = ordered.mapInArrow(_write_groups(str(root.resolve())), to_spark(WRITTEN)).collect()
    counts: dict[str, dict[str, int]] = {}
    for row in written:
        counts.setdefault(row[R.task], dict.fromkeys(SPLITS, 0))[row[R.split]] = row["rows"]
    return dict(sorted(counts.items()))


def read_corpus(spark, root: Path | str) -> DataFrame:
    """The written corpus with its declared schema (the directory names repeat the columns)."""
    from jobs.common.io import read_table

    return read_table(spark, Path(root), SFT_RECORDS).select(*SFT_RECORDS.names)
