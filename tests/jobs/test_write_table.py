"""write_table: declared schema, stable file names, nothing lost or left behind, and the same bytes from
any process on any master (Spark's own Parquet writer varies its footers from one JVM to the next).

Run as a script (``python tests/jobs/test_write_table.py OUT MASTER``) it writes the test table in a
fresh JVM on that master: the cross-process test compares those bytes with its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(REPO))

from jobs.common.io import read_table, write_empty_table, write_table  # noqa: E402
from schemas.catalog import CATALOG  # noqa: E402
from schemas.catalog import C as K  # noqa: E402
from schemas.convert import to_spark  # noqa: E402
from schemas.embeddings import EMBEDDINGS  # noqa: E402

pytestmark = pytest.mark.spark

N_ROWS = 3000
# Separate executor JVMs: what a cluster does, on one machine.
CLUSTER_MASTER = "local-cluster[2,1,1024]"


def catalog_frame(spark):
    """Every kind of column the contracts use: strings with nulls, lists, maps, doubles, timestamps."""
    return spark.range(N_ROWS).selectExpr(
        f"format_string('item%05d', id) as {K.item_id}",
        f"concat('title ', id) as {K.title}",
        f"if(id % 4 = 0, null, repeat('word ', cast(id % 13 as int))) as {K.description}",
        f"if(id % 3 = 0, 'acme', null) as {K.brand}",
        f"array('Industrial', concat('cat', cast(id % 7 as string))) as {K.category_path}",
        f"if(id % 5 = 0, null, cast(id * 1.25 as double)) as {K.price}",
        f"map('colour', concat('c', cast(id % 2 as string))) as {K.attributes}",
        f"timestamp_seconds(1700000000 + id * 60) as {K.updated_at}",
        f"sha2(cast(id as string), 256) as {K.text_hash}",
    )


def write_test_table(spark, out: Path | str) -> None:
    # Two files, each sorted: the caller's order is what the files keep.
    write_table(catalog_frame(spark).repartition(2, K.item_id).sortWithinPartitions(K.item_id), out, CATALOG, num_files=2)


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_round_trip_keeps_rows_order_and_declared_types(spark, tmp_path):
    write_test_table(spark, tmp_path / "t")
    names = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert names and all(n.startswith("part-") and n.endswith(".snappy.parquet") for n in names), names
    back = read_table(spark, tmp_path / "t", CATALOG)
    assert [(f.name, f.dataType) for f in back.schema] == [(f.name, f.dataType) for f in to_spark(CATALOG)]
    def by_id(frame):
        return sorted(frame.collect(), key=lambda row: row[K.item_id])

    assert len(by_id(back)) == N_ROWS and by_id(back) == by_id(catalog_frame(spark))
    for name in names:
        table = pq.read_table(tmp_path / "t" / name)
        assert set(CATALOG.metadata.items()) <= set(table.schema.metadata.items())  # the contract's name
        ids = table.column(K.item_id).to_pylist()
        assert ids == sorted(ids)  # each file in the order its partition was sorted


def test_vectors_skip_the_dictionary_and_other_columns_keep_it(spark, tmp_path):
    rows = [(f"i{i}", "text", "h", "m", [float(i), 0.5]) for i in range(50)]
    frame = spark.createDataFrame(rows, "item_id string, space string, text_hash string, model_fingerprint string, embedding array<float>")
    write_table(frame, tmp_path / "e", EMBEDDINGS, num_files=1)
    meta = pq.read_metadata(next((tmp_path / "e").iterdir())).row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert not any("DICTIONARY" in e for e in encodings["embedding.list.element"])
    assert any("DICTIONARY" in e for e in encodings["space"])


def test_empty_input_gives_one_readable_empty_file_and_overwrite_replaces(spark, tmp_path):
    write_test_table(spark, tmp_path / "t")
    write_table(catalog_frame(spark).limit(0), tmp_path / "t", CATALOG)
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["part-00000.snappy.parquet"]
    assert read_table(spark, tmp_path / "t", CATALOG).count() == 0
    write_empty_table(tmp_path / "empty", CATALOG)
    assert _files(tmp_path / "empty") == _files(tmp_path / "t")


def test_a_failed_attempts_partial_file_is_not_published(spark, tmp_path):
    """An attempt that died mid-write leaves ``<part>.tmp-<attempt>``: only complete files remain."""
    from pyspark import TaskContext

    def leave_a_partial(batches):
        # Local mode does not retry tasks: plant what a dead attempt 1 leaves beside this task's file.
        partial = tmp_path / "t" / f"part-{TaskContext.get().partitionId():05d}.snappy.parquet.tmp-1"
        partial.write_bytes(b"half a file")
        yield from batches

    frame = catalog_frame(spark).coalesce(1).mapInArrow(leave_a_partial, to_spark(CATALOG))
    write_table(frame, tmp_path / "t", CATALOG)
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["part-00000.snappy.parquet"]
    assert read_table(spark, tmp_path / "t", CATALOG).count() == N_ROWS


@pytest.mark.slow
def test_the_same_rows_are_the_same_bytes_from_another_jvm_on_a_cluster_master(spark, tmp_path):
    write_test_table(spark, tmp_path / "here")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    done = subprocess.run(
        [sys.executable, __file__, str(tmp_path / "there"), CLUSTER_MASTER],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    here, there = _files(tmp_path / "here"), _files(tmp_path / "there")
    assert len(here) == 2 and here.keys() == there.keys()
    assert here == there


if __name__ == "__main__":
    from jobs.common.spark import SparkConfig, get_session

    session = get_session(SparkConfig(master=sys.argv[2], shuffle_partitions=4, driver_memory="1g"))
    write_test_table(session, sys.argv[1])
    session.stop()
