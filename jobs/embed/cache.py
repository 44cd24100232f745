"""Incremental embedding cache: vectors keyed by (encoder fingerprint, hash of the rendered text).

Layout: ``<cache_dir>/embeddings/encoder=<fingerprint>/<content hash>.parquet`` (EMBEDDING_CACHE).
Entries are only ever added, as new files named by their content: Spark writes them under a
``_tmp-*`` folder (which readers ignore), then each finished file is moved in with one atomic rename.
A run killed midway leaves either whole files (reused by the next run) or a stale temp folder (swept
later); an existing file is never rewritten.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from jobs.common.io import fingerprint_path, write_table
from schemas.convert import to_spark
from schemas.embeddings import EMBEDDING_CACHE, C

TMP_PREFIX = "_tmp-"
# Column :meth:`EmbeddingCache.read` adds: the name of the entry file a row was read from.
SOURCE = "cache_file"
# A temp folder older than this belongs to a run that died (a live run moves its files within seconds
# of writing them): safe to delete.
STALE_TMP_SECONDS = 6 * 3600


class EmbeddingCache:
    def __init__(self, root: Path | str, encoder_fingerprint: str):
        self.dir = Path(root) / f"encoder={encoder_fingerprint}"

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.parquet")) if self.dir.is_dir() else []

    def read(self, spark):
        """Every cached row: (text_hash, embedding, SOURCE); no rows when the cache is empty.

        Not deduplicated (that would shuffle the whole cache on every read): two runs racing on the
        same texts can both add a vector for one hash, and a consumer that needs one vector per hash
        keeps the row whose SOURCE sorts first (:func:`first_per_hash`), so the choice never depends
        on listing order.
        """
        from pyspark.sql import functions as F

        files = self.files()
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

    def sweep_stale(self, max_age_s: float = STALE_TMP_SECONDS) -> int:
        """Delete temp folders left by killed runs; returns how many were removed."""
        removed, now = 0, time.time()
        for tmp in self.dir.glob(f"{TMP_PREFIX}*"):
            if now - tmp.stat().st_mtime > max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        return removed


def first_per_hash(cached):
    """One (text_hash, embedding, SOURCE) per hash: the row of the file whose name sorts first."""
    from pyspark.sql import functions as F

    return cached.groupBy(C.text_hash).agg(
        F.min_by(C.embedding, F.col(SOURCE)).alias(C.embedding), F.min(SOURCE).alias(SOURCE)
    )
