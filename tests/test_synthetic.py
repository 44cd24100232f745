"""The synthetic generator: schema-valid, deterministic per seed, skewed like real logs."""

import numpy as np
import pyarrow.parquet as pq

from schemas.catalog import RAW_CATALOG
from schemas.interactions import RAW_INTERACTIONS
from sidpipe.synthetic import generate


def test_generator_is_deterministic_schema_valid_and_skewed(tmp_path):
    a = generate(tmp_path / "a", n_items=500, n_users=200, n_interactions=5000, seed=3)
    b = generate(tmp_path / "b", n_items=500, n_users=200, n_interactions=5000, seed=3)
    c = generate(tmp_path / "c", n_items=500, n_users=200, n_interactions=5000, seed=4)
    cat, inter = pq.read_table(a[0]), pq.read_table(a[1])
    assert cat.schema.equals(RAW_CATALOG, check_metadata=False)
    assert inter.schema.equals(RAW_INTERACTIONS, check_metadata=False)
    assert cat.equals(pq.read_table(b[0])) and inter.equals(pq.read_table(b[1]))
    assert not inter.equals(pq.read_table(c[1]))

    assert abs(inter.num_rows - 5000) / 5000 < 0.1
    assert set(inter.column("item_id").to_pylist()) <= set(cat.column("item_id").to_pylist())
    counts = np.sort(np.unique(inter.column("item_id").to_numpy(zero_copy_only=False), return_counts=True)[1])[::-1]
    top_share = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_share > 0.3, "Zipf popularity: the top 10% of items carry a large share of events"
    # Per user, timestamps never go backwards.
    df = inter.to_pandas()
    assert df.groupby("user_id")["timestamp"].apply(lambda s: s.is_monotonic_increasing).all()
    assert df["query"].notna().any() and df["session_id"].notna().all()
