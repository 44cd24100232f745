"""Incremental embedding cache: vectors keyed by (encoder fingerprint, hash of the rendered text).

Layout: ``<cache_dir>/embeddings/encoder=<fingerprint>/<content hash>.parquet`` (EMBEDDING_CACHE).
Entries are only ever added, as new files named by their content: Spark tasks write them under a
``_tmp-*`` folder (which readers ignore), then each finished file is moved in with one atomic rename.
A run killed midway leaves either whole files (reused by the next run) or a stale temp folder (swept
later); an existing file is never rewritten.

Small files are merged now and then (:meth:`EmbeddingCache.compact`): the merged file is published
like any entry, then a ``_compacted-*.json`` record retires the files it replaces. Readers skip
retired files at once; they are deleted only when the record is older than any run can take, so a
run that listed them before the merge still reads every file it listed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path

from jobs.common.io import atomic_write_text, fingerprint_path, write_table
from schemas.convert import to_spark
from schemas.embeddings import EMBEDDING_CACHE, C

TMP_PREFIX = "_tmp-"
# Column :meth:`EmbeddingCache.read` adds: the name of the entry file a row was read from.
SOURCE = "cache_file"
# A temp folder older than this belongs to a run that died (a live run moves its files within seconds
# of writing them): safe to delete. Files retired by a compaction this long ago are no longer read.
STALE_TMP_SECONDS = 6 * 3600
RECORD_PREFIX = "_compacted-"  # {"replaced": [file names], "merged_into": [file names]}


class EmbeddingCache:
    def __init__(self, root: Path | str, encoder_fingerprint: str):
        self.dir = Path(root) / f"encoder={encoder_fingerprint}"

    def files(self) -> list[Path]:
        """The live entry files (not retired by a compaction), sorted by name."""
        if not self.dir.is_dir():
            return []
        retired = self._retired(self._records())
        return sorted(p for p in self.dir.glob("*.parquet") if p.name not in retired)

    def _records(self) -> list[tuple[Path, dict]]:
        return [(p, json.loads(p.read_text())) for p in sorted(self.dir.glob(f"{RECORD_PREFIX}*.json"))]

    @staticmethod
    def _retired(records: list[tuple[Path, dict]]) -> set[str]:
        replaced = {name for _, r in records for name in r["replaced"]}
        # A merged file that happens to carry a retired file's name (same bytes) is live.
        return replaced - {name for _, r in records for name in r["merged_into"]}

    def read(self, spark):
        """Every cached row: (text_hash, embedding, SOURCE); no rows when the cache is empty.

        Not deduplicated (that would shuffle the whole cache on every read): two runs racing on the
        same texts can both add a vector for one hash, and a consumer that needs one vector per hash
        keeps the row whose SOURCE sorts first (:func:`first_per_hash`), so the choice never depends
        on listing order.
        """
        return self._read(spark, self.files())

    @staticmethod
    def _read(spark, files: list[Path]):
        from pyspark.sql import functions as F

        if not files:
            return spark.createDataFrame([], to_spark(EMBEDDING_CACHE)).withColumn(SOURCE, F.lit(None).cast("string"))
        df = spark.read.schema(to_spark(EMBEDDING_CACHE)).parquet(*[str(f) for f in files])
        # Entry files are content-named in one folder: the base name identifies one.
        return df.withColumn(SOURCE, F.element_at(F.split(F.input_file_name(), "/"), -1))

    def add(self, df) -> list[Path]:
        """Write new entries (EMBEDDING_CACHE rows) and publish them as content-named files."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sweep_stale()
        tmp = self.dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            write_table(df, tmp, EMBEDDING_CACHE)
            return self._publish(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _publish(self, tmp: Path) -> list[Path]:
        import pyarrow.parquet as pq

        added = []
        for part in sorted(tmp.glob("*.parquet")):
            if pq.read_metadata(part).num_rows == 0:
                continue
            target = self.dir / f"{fingerprint_path(part)}.parquet"
            if not target.exists():  # same content already there (a retried run): nothing to add
                os.replace(part, target)
            added.append(target)
        return added

    def compact(self, spark, *, min_files: int, file_bytes: int) -> dict:
        """Merge the entry files smaller than ``file_bytes`` into files of about that size, once
        ``min_files`` of them exist; returns what was merged (empty when nothing was).

        The merged rows hold one vector per hash, the one every reader picks anyway
        (:func:`first_per_hash`), sorted by hash, so the merged files are named by content like any
        entry. Call it when no DataFrame of this run still reads the cache: the files it retires
        disappear from :meth:`files` at once.
        """
        small = [f for f in self.files() if f.stat().st_size < file_bytes]
        if len(small) < min_files:
            return {}
        total_bytes = sum(f.stat().st_size for f in small)
        rows = first_per_hash(self._read(spark, small)).select(C.text_hash, C.embedding)
        num_files = max(1, math.ceil(total_bytes / file_bytes))
        merged = self.add(rows.coalesce(num_files).sortWithinPartitions(C.text_hash))
        merged_names = sorted(f.name for f in merged)
        replaced = sorted(f.name for f in small if f.name not in merged_names)
        record = self.dir / f"{RECORD_PREFIX}{merged_names[0] if merged_names else uuid.uuid4().hex}.json"
        atomic_write_text(record, json.dumps({"replaced": replaced, "merged_into": merged_names}, indent=1))
        return {"files_merged": len(small), "merged_into": len(merged_names), "bytes_merged": total_bytes}

    def sweep_stale(self, max_age_s: float = STALE_TMP_SECONDS) -> int:
        """Delete temp folders left by killed runs, and files retired by a compaction more than
        ``max_age_s`` ago (with the record); returns how many temp folders and records were removed."""
        removed, now = 0, time.time()
        for tmp in self.dir.glob(f"{TMP_PREFIX}*"):
            if now - tmp.stat().st_mtime > max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        records = self._records()
        retired = self._retired(records)
        for path, record in records:
            if now - path.stat().st_mtime > max_age_s:
                for name in retired.intersection(record["replaced"]):
                    (self.dir / name).unlink(missing_ok=True)
                path.unlink()
                removed += 1
        return removed


def first_per_hash(cached):
    """One (text_hash, embedding, SOURCE) per hash: the row of the file whose name sorts first."""
    from pyspark.sql import functions as F

    return cached.groupBy(C.text_hash).agg(
        F.min_by(C.embedding, F.col(SOURCE)).alias(C.embedding), F.min(SOURCE).alias(SOURCE)
    )
