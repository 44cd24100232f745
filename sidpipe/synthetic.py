"""Synthetic catalogs and interaction logs of any size, for scale tests and benchmarks.

Items get realistic-looking titles from a category taxonomy (brand + adjective + product noun +
spec), Zipf-distributed popularity, and users browse mostly within a few favourite categories so the
log has collaborative structure. Output is RAW_CATALOG / RAW_INTERACTIONS Parquet. Deterministic per seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.catalog import RAW_CATALOG
from schemas.interactions import RAW_INTERACTIONS

TAXONOMY = {
    "Fasteners": ["Screws", "Bolts", "Anchors", "Rivets", "Staples", "Washers"],
    "Lab & Scientific Products": ["Pipettes", "Beakers", "Centrifuge Tubes", "Microscope Slides", "Gloves"],
    "Industrial Electrical": ["Relays", "Capacitors", "Circuit Breakers", "Terminal Blocks", "Wire Connectors"],
    "Tapes, Adhesives & Sealants": ["Duct Tape", "Epoxy", "Masking Tape", "Silicone Sealant", "Super Glue"],
    "Test, Measure & Inspect": ["Multimeters", "Calipers", "Thermometers", "Levels", "Pressure Gauges"],
    "Additive Manufacturing Products": ["PLA Filament", "PETG Filament", "Resin", "Nozzles", "Build Plates"],
    "Janitorial & Sanitation Supplies": ["Trash Bags", "Mop Heads", "Paper Towels", "Disinfectant", "Brooms"],
    "Cutting Tools": ["Drill Bits", "End Mills", "Saw Blades", "Taps", "Reamers"],
}
BRANDS = ["Acme", "Stanley", "3M", "Hillman", "Fluke", "Gorilla", "Hatchbox", "Rubbermaid", "Irwin", "Loctite",
          "Bosch", "DeWalt", "Eppendorf", "Corning", "Kimberly", "Mitutoyo", "Starrett", "Sunlu", "Uline", "Grainger"]
ADJECTIVES = ["Heavy-Duty", "Stainless Steel", "Professional", "Compact", "High-Temperature", "Industrial",
              "Precision", "Multi-Purpose", "Waterproof", "Reusable", "Clear", "Black", "Zinc-Plated", "Sterile"]
SPECS = ["{n}-Pack", "{n} mm", "{n} oz", "{n}-Inch", "Size {n}", "{n} Count", "{n} ft"]


def make_catalog(n_items: int, *, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    tops = list(TAXONOMY)
    top_idx = rng.integers(0, len(tops), n_items)
    rows = {name: [] for name in RAW_CATALOG.names}
    base_ts = np.datetime64("2024-01-01T00:00:00", "us")
    for i in range(n_items):
        top = tops[top_idx[i]]
        leaf = TAXONOMY[top][rng.integers(0, len(TAXONOMY[top]))]
        brand = BRANDS[rng.integers(0, len(BRANDS))]
        adj = ADJECTIVES[rng.integers(0, len(ADJECTIVES))]
        spec = SPECS[rng.integers(0, len(SPECS))].format(n=int(rng.integers(1, 500)))
        title = f"{brand} {adj} {leaf[:-1] if leaf.endswith('s') else leaf}, {spec}"
        rows["item_id"].append(f"i{i}")
        rows["title"].append(title)
        rows["description"].append(f"{adj} {leaf.lower()} by {brand} for {top.lower()} work. {spec}. Model {rng.integers(1000, 99999)}.")
        rows["brand"].append(brand)
        rows["category_path"].append(["Industrial & Scientific", top, leaf])
        rows["attributes"].append([("spec", spec)])
        rows["price"].append(float(np.round(rng.lognormal(3.0, 1.0), 2)))
        rows["updated_at"].append((base_ts + np.timedelta64(int(rng.integers(0, 365 * 86400)), "s")).item())
    return pa.Table.from_pydict(rows, schema=RAW_CATALOG)


def make_interactions(catalog: pa.Table, n_users: int, n_interactions: int, *, seed: int = 0,
                      timestamps: bool = True, queries: bool = True, zipf_a: float = 1.1) -> pa.Table:
    """Vectorised: O(n_interactions log n_items), so 1M events over 100k items take seconds."""
    rng = np.random.default_rng(seed + 1)
    n_items = catalog.num_rows
    top_names = list(TAXONOMY)
    tops = np.array([top_names.index(path[1]) for path in catalog.column("category_path").to_pylist()])
    # Zipf popularity: rank r gets weight r^-a, ranks assigned by a random permutation of items.
    weights = np.empty(n_items)
    weights[rng.permutation(n_items)] = np.arange(1, n_items + 1, dtype=float) ** -zipf_a
    # Items grouped by top category; sampling inside a group by inverse CDF of its weights.
    order = np.lexsort((np.arange(n_items), tops))
    group_start = np.searchsorted(tops[order], np.arange(len(top_names)))
    group_end = np.searchsorted(tops[order], np.arange(len(top_names)), side="right")
    cum = np.cumsum(weights[order])
    # Users' activity is itself skewed; every user gets at least 2 events.
    activity = rng.pareto(1.5, n_users) + 1
    per_user = np.maximum(2, np.round(activity / activity.sum() * n_interactions)).astype(np.int64)
    user = np.repeat(np.arange(n_users), per_user)
    n = len(user)
    present = np.flatnonzero(group_end > group_start)
    favourites = rng.choice(present, size=(n_users, 2))
    top = np.where(rng.random(n) < 0.8, favourites[user, rng.integers(0, 2, n)], rng.choice(present, size=n))
    lo = np.where(group_start[top] > 0, cum[np.maximum(group_start[top] - 1, 0)], 0.0)
    hi = cum[group_end[top] - 1]
    item = order[np.searchsorted(cum, lo + rng.random(n) * (hi - lo), side="right").clip(max=n_items - 1)]
    # Time: each user starts somewhere in 2024 and acts with exponential gaps; a gap > 12h opens a session.
    gaps = rng.exponential(3600 * 24, n).astype(np.int64)
    first = np.r_[0, np.cumsum(per_user)[:-1]]
    gaps[first] = rng.integers(0, 300 * 86400, n_users)
    offsets = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], per_user)
    new_session = gaps > 3600 * 12
    new_session[first] = True
    session = np.cumsum(new_session) - np.repeat(np.cumsum(new_session)[first] - 1, per_user)
    ts = np.datetime64("2024-01-01T00:00:00", "us") + offsets.astype("timedelta64[s]")
    titles = np.array(catalog.column("title").to_pylist(), dtype=object)
    has_query = queries & (rng.random(n) < 0.3)
    query = np.full(n, None, dtype=object)
    query[has_query] = [" ".join(t.split()[1:4]).lower() for t in titles[item[has_query]]]
    users = np.char.add("u", np.arange(n_users).astype(str))[user]
    return pa.Table.from_pydict(
        {
            "user_id": users,
            "item_id": np.char.add("i", item.astype(str)),
            "event_type": np.where(rng.random(n) < 0.2, "purchase", "view"),
            "timestamp": pa.array(ts, type=pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")) if timestamps
            else pa.nulls(n, pa.timestamp("us", tz="UTC")),
            "query": query,
            "session_id": np.char.add(np.char.add(users, "-s"), session.astype(str)),
        },
        schema=RAW_INTERACTIONS,
    )


def generate(out_dir: str | Path, *, n_items: int, n_users: int, n_interactions: int, seed: int = 0,
             timestamps: bool = True, queries: bool = True) -> tuple[Path, Path]:
    """Write ``catalog.parquet`` and ``interactions.parquet`` under ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalog = make_catalog(n_items, seed=seed)
    interactions = make_interactions(catalog, n_users, n_interactions, seed=seed, timestamps=timestamps, queries=queries)
    pq.write_table(catalog, out / "catalog.parquet")
    pq.write_table(interactions, out / "interactions.parquet")
    return out / "catalog.parquet", out / "interactions.parquet"
