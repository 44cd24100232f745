"""Writing the corpus: ``<root>/split=<s>/task=<t>/part-00000.parquet``, without shuffling wide records.

The records are built once, by plain-Python builders inside ``mapInArrow``. Wide records (chat messages,
inputs, outputs) never go back through the JVM: the build writes them, as it makes them, to a staging
folder (``<staging>/split=<s>/task=<t>/<source>-<partition>.parquet``, one file per group and build
partition, written under a temporary name and renamed, so a retried task replaces its own file) and
returns one small *key* row per record (:data:`KEYS`: task, split, id, dedup content hash, token count).
Deduplication, mixture weights and caps are decided on the keys in Spark; :func:`write_corpus` then
hash-partitions the kept keys by (split, task), so each group lives in exactly one partition, sorted by
record id, and a pyarrow writer in ``mapInArrow`` reads that group's staged rows, keeps the chosen ones
in key order and writes the file: byte-identical across runs. Each writer also returns its records'
token-count histogram, so the card's exact token statistics cost no further pass over the records.

Spark's own ``partitionBy`` would strip ``split`` and ``task`` out of the data files, and then
``load_dataset("parquet", data_files=...)`` (which knows nothing of hive directories) would load
records without them, so every file carries every SFT_RECORDS column.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame

from schemas.convert import to_spark
from schemas.sft import SFT_RECORDS, SPLITS
from schemas.sft import C as R

ROWS_PER_GROUP = 65_536
FILE_NAME = "part-00000.parquet"
CONTENT, TOKENS = "_content", "tokens"
# One row per written file: its rows, and the histogram of their token counts (distinct counts and how
# many records have each: a few hundred numbers whatever the group's size).
TOKEN_VALUES, TOKEN_FREQUENCIES = "token_values", "token_frequencies"
WRITTEN = pa.schema([pa.field(R.split, pa.string()), pa.field(R.task, pa.string()), pa.field("rows", pa.int64()),
                     pa.field(TOKEN_VALUES, pa.list_(pa.int64())), pa.field(TOKEN_FREQUENCIES, pa.list_(pa.int64()))])
# One row per built record: what dedup, mixture, caps, counts and token statistics need.
KEYS = pa.schema([pa.field(R.task, pa.string()), pa.field(R.split, pa.string()), pa.field(R.id, pa.string()),
                  pa.field(CONTENT, pa.string()), pa.field(TOKENS, pa.int64())])
# Staged rows: every SFT_RECORDS column plus the dedup content hash (rows are matched on (id, content)).
STAGED = pa.schema(list(SFT_RECORDS) + [pa.field(CONTENT, pa.string())]).with_metadata(SFT_RECORDS.metadata)

# Approximate tokens (the card's definition): SID tokens, words and punctuation marks over all message
# contents, i.e. Spark's ``regexp_count(concat_ws("\n", contents), "<[^<>\s]+>|\w+|[^\w\s]")`` with Java's
# ASCII ``\w`` / ``\s`` spelt out, so RE2 (pyarrow) counts exactly what Java counts.
_W, _S = "0-9A-Za-z_", "\\t\\n\\x0B\\f\\r "
TOKEN_PATTERN = f"<[^<>{_S}]+>|[{_W}]+|[^{_W}{_S}]"


def group_dir(root: Path | str, split: str, task: str) -> Path:
    return Path(root) / f"{R.split}={split}" / f"{R.task}={task}"


def token_counts(messages: pa.Array) -> np.ndarray:
    """Tokens per record of a ``list<struct<role, content>>`` array (see :data:`TOKEN_PATTERN`). No match
    crosses a newline, so counting each message and summing equals counting the newline-joined text."""
    messages = messages.combine_chunks() if isinstance(messages, pa.ChunkedArray) else messages
    if len(messages) == 0:
        return np.zeros(0, dtype=np.int64)
    contents = messages.values.field("content")
    per_message = pc.fill_null(pc.count_substring_regex(contents, pattern=TOKEN_PATTERN), 0).to_numpy(zero_copy_only=False)
    cumulative = np.concatenate([[0], np.cumsum(per_message, dtype=np.int64)])
    offsets = messages.offsets.to_numpy()
    return cumulative[offsets[1:]] - cumulative[offsets[:-1]]


def stage_batches(rows_to_records: Callable[[dict], Iterable[dict]], schema: pa.Schema, staging: str, source: str):
    """``mapInArrow`` function: build records from input rows, write them to ``staging`` and yield KEYS rows.

    ``schema``: the records' arrow schema (SFT_RECORDS columns plus CONTENT)."""
    names = STAGED.names

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        tc = TaskContext.get()
        part = f"{source}-{tc.partitionId() if tc else 0:05d}"
        attempt = f"{tc.attemptNumber() if tc else 0}"
        writers: dict[tuple[str, str], tuple[pq.ParquetWriter, str, str]] = {}
        try:
            for batch in batches:
                out = []
                for row in batch.to_pylist():
                    out.extend(rows_to_records(row))
                if not out:
                    continue
                table = pa.Table.from_pylist(out, schema=schema).select(names).cast(STAGED)
                splits, tasks = table.column(R.split), table.column(R.task)
                tokens = token_counts(table.column(R.messages))
                yield pa.RecordBatch.from_arrays(
                    [tasks.combine_chunks(), splits.combine_chunks(), table.column(R.id).combine_chunks(),
                     table.column(CONTENT).combine_chunks(), pa.array(tokens, pa.int64())], schema=KEYS)
                group_key = pc.binary_join_element_wise(splits, tasks, "\x1f")
                for key in sorted(set(group_key.to_pylist())):
                    split, task = key.split("\x1f")
                    if (split, task) not in writers:
                        folder = group_dir(staging, split, task)
                        folder.mkdir(parents=True, exist_ok=True)
                        final = str(folder / f"{part}.parquet")
                        tmp = f"{final}.tmp{attempt}"
                        writers[(split, task)] = (pq.ParquetWriter(tmp, STAGED, compression="snappy"), tmp, final)
                    writers[(split, task)][0].write_table(table.filter(pc.equal(group_key, key)))
        finally:
            for writer, _, _ in writers.values():
                writer.close()
        # only a complete partition is published under its final name (a failed attempt leaves a .tmp)
        for _, tmp, final in writers.values():
            os.replace(tmp, final)

    return run


def staged_group(staging: Path | str, split: str, task: str) -> pa.Table:
    files = sorted(str(p) for p in group_dir(staging, split, task).glob("*.parquet"))
    if not files:
        return STAGED.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=STAGED) for f in files])


def _write_groups(root: str, staging: str):
    def write_group(split: str, task: str, ids: list[pa.Array], contents: list[pa.Array], tokens: list[pa.Array]) -> pa.RecordBatch:
        kept = pa.chunked_array(ids, pa.string()).combine_chunks()
        kept_content = pa.chunked_array(contents, pa.string()).combine_chunks()
        values, frequencies = np.unique(pa.chunked_array(tokens, pa.int64()).to_numpy(), return_counts=True)
        staged = staged_group(staging, split, task)
        key = pc.binary_join_element_wise(staged.column(R.id), staged.column(CONTENT), "\x1f")
        wanted = pc.binary_join_element_wise(kept, kept_content, "\x1f")
        table = staged.filter(pc.is_in(key, value_set=wanted))
        table = table.take(pc.sort_indices(table, sort_keys=[(R.id, "ascending"), (CONTENT, "ascending")]))
        table = table.select(SFT_RECORDS.names).cast(SFT_RECORDS)
        path = group_dir(root, split, task)
        path.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(str(path / FILE_NAME), SFT_RECORDS, compression="snappy") as writer:
            for start in range(0, max(table.num_rows, 1), ROWS_PER_GROUP):
                writer.write_table(table.slice(start, ROWS_PER_GROUP), row_group_size=ROWS_PER_GROUP)
        return pa.RecordBatch.from_pylist([{R.split: split, R.task: task, "rows": table.num_rows,
                                            TOKEN_VALUES: values.tolist(), TOKEN_FREQUENCIES: frequencies.tolist()}], schema=WRITTEN)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        key, ids, contents, tokens = None, [], [], []
        for batch in batches:
            splits, tasks = batch.column(R.split).to_pylist(), batch.column(R.task).to_pylist()
            start = 0
            for i in range(1, len(splits) + 1):
                if i < len(splits) and (splits[i], tasks[i]) == (splits[start], tasks[start]):
                    continue
                group = (splits[start], tasks[start])
                if group != key:
                    if key is not None:
                        yield write_group(*key, ids, contents, tokens)
                    key, ids, contents, tokens = group, [], [], []
                ids.append(batch.column(R.id).slice(start, i - start))
                contents.append(batch.column(CONTENT).slice(start, i - start))
                tokens.append(batch.column(TOKENS).slice(start, i - start))
                start = i
        if key is not None:
            yield write_group(*key, ids, contents, tokens)

    return run


def write_corpus(kept: DataFrame, staging: Path | str, root: Path | str, *, partitions: int):
    """Write every (split, task) group of the kept KEYS rows from the staged records.

    Returns (task -> split -> rows, task -> token statistics of its records: see :func:`token_stats`).
    """
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    ordered = kept.select(R.split, R.task, R.id, CONTENT, TOKENS).repartition(partitions, R.split, R.task).sortWithinPartitions(
        R.split, R.task, R.id, CONTENT)
    written = ordered.mapInArrow(_write_groups(str(root.resolve()), str(Path(staging).resolve())), to_spark(WRITTEN)).collect()
    counts: dict[str, dict[str, int]] = {}
    histograms: dict[str, dict[int, int]] = {}
    for row in written:
        counts.setdefault(row[R.task], dict.fromkeys(SPLITS, 0))[row[R.split]] = row["rows"]
        histogram = histograms.setdefault(row[R.task], {})
        for value, frequency in zip(row[TOKEN_VALUES], row[TOKEN_FREQUENCIES]):
            histogram[value] = histogram.get(value, 0) + frequency
    stats = {task: token_stats(h) for task, h in sorted(histograms.items()) if h}
    return dict(sorted(counts.items())), stats


def token_stats(histogram: dict[int, int]) -> dict[str, float]:
    """mean, p50, p95 and max of token counts given as value -> records, exactly as Spark's ``avg`` and
    ``percentile`` compute them over the records (linear interpolation between the closest ranks)."""
    values = np.array(sorted(histogram), dtype=np.int64)
    frequencies = np.array([histogram[v] for v in values.tolist()], dtype=np.int64)
    ends = np.cumsum(frequencies)  # records with a value <= values[i]
    n = int(ends[-1])

    def at_rank(rank: int) -> float:
        return float(values[np.searchsorted(ends, rank + 1)])

    def percentile(p: float) -> float:
        position = (n - 1) * p
        lower, higher = math.floor(position), math.ceil(position)
        low, high = at_rank(lower), at_rank(higher)
        if higher == lower or low == high:
            return low
        return (higher - position) * low + (position - lower) * high

    return {"mean": float(values @ frequencies) / n, "p50": percentile(0.5), "p95": percentile(0.95), "max": float(values[-1])}


def read_corpus(spark, root: Path | str) -> DataFrame:
    """The written corpus with its declared schema (the directory names repeat the columns)."""
    from jobs.common.io import read_table

    return read_table(spark, Path(root), SFT_RECORDS).select(*SFT_RECORDS.names)
