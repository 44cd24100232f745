"""Semantically recoverable SIDs (ShopX): what kind of product a code prefix stands for.

For every level-1 prefix and every level-1-2 prefix: item count, dominant category path (and its
share), top distinctive title terms (TF-IDF: share of the prefix's items whose title has the term,
times log(N / items with the term anywhere)), and example titles (first by item_id).

JSON format (``glossary.json``)::

    {"format": "1", "items": N, "prefix_levels": [1, 2],
     "prefixes": {"<a_12>": {"level": 1, "codes": [12], "item_count": 17,
                             "category_path": ["Industrial & Scientific", "Fasteners"], "category_share": 0.82,
                             "top_terms": ["staple", "crown"], "example_titles": ["..."]},
                  "<a_12><b_3>": {"level": 2, ...}}}

The core works on small aggregate tables (term counts per prefix, category counts per prefix), which
Spark computes at any scale; :func:`aggregates_from_items` computes the same tables in pandas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

GLOSSARY_FORMAT = "1"
TERM_PATTERN = r"[a-z][a-z0-9]{2,}"
STOPWORDS = frozenset(
    ["and", "the", "for", "with", "inch", "pack", "set", "pcs", "piece", "pieces", "from", "that", "this", "are", "not", "use", "per", "each", "new", "count", "size", "one", "two", "type", "used", "made", "high", "low"]
)
_TERM_RE = re.compile(TERM_PATTERN)


def title_terms(title: str | None) -> list[str]:
    """Distinct lower-case terms of a title (the same rule the Spark job applies with SQL)."""
    if not title:
        return []
    return sorted({t for t in _TERM_RE.findall(title.lower()) if t not in STOPWORDS})


def aggregates_from_items(items: pd.DataFrame, *, prefix_levels: Sequence[int] = (1, 2), examples: int = 3) -> dict[str, pd.DataFrame]:
    """items: ``item_id``, ``sid`` (list), ``title``, ``category_path`` (list or None).

    Returns the aggregate tables :func:`build_glossary` needs (see there for their columns).
    """
    rows_terms, rows_cats, rows_examples, rows_sizes = [], [], [], []
    doc_freq: dict[str, int] = {}
    for item in items.sort_values("item_id", kind="stable").itertuples(index=False):
        terms = title_terms(item.title)
        for t in terms:
            doc_freq[t] = doc_freq.get(t, 0) + 1
        for lv in prefix_levels:
            prefix = tuple(int(v) for v in item.sid[:lv])
            rows_sizes.append((lv, prefix))
            rows_terms += [(lv, prefix, t) for t in terms]
            rows_cats.append((lv, prefix, _cat_key(item.category_path)))
            rows_examples.append((lv, prefix, item.item_id, item.title or ""))
    sizes = pd.DataFrame(rows_sizes, columns=["level", "prefix"]).value_counts().rename("item_count").reset_index()
    terms = pd.DataFrame(rows_terms, columns=["level", "prefix", "term"]).value_counts().rename("count").reset_index()
    cats = pd.DataFrame(rows_cats, columns=["level", "prefix", "category"]).value_counts().rename("count").reset_index()
    ex = pd.DataFrame(rows_examples, columns=["level", "prefix", "item_id", "title"])
    ex = ex.sort_values(["level", "prefix", "item_id"], kind="stable").groupby(["level", "prefix"], sort=False).head(examples)
    df = pd.DataFrame(sorted(doc_freq.items()), columns=["term", "doc_freq"])
    return {"sizes": sizes, "term_counts": terms, "category_counts": cats, "examples": ex, "doc_freq": df, "items": len(items)}


def _cat_key(path: Any) -> str:
    if path is None or (isinstance(path, float) and math.isnan(path)):
        return ""
    return " > ".join(str(p) for p in path)


def build_glossary(agg: dict[str, Any], *, render_prefix, top_terms: int = 8) -> dict[str, Any]:
    """Glossary JSON from aggregate tables.

    ``agg``: ``sizes`` (level, prefix, item_count), ``term_counts`` (level, prefix, term, count),
    ``category_counts`` (level, prefix, category " > "-joined, count), ``examples`` (level, prefix,
    item_id, title), ``doc_freq`` (term, doc_freq), ``items`` (int). ``render_prefix(codes) -> str``.
    """
    n_items = max(int(agg["items"]), 1)
    idf = {t: math.log(n_items / df) for t, df in zip(agg["doc_freq"]["term"], agg["doc_freq"]["doc_freq"])}
    sizes = {(int(lv), tuple(p)): int(c) for lv, p, c in zip(agg["sizes"]["level"], agg["sizes"]["prefix"], agg["sizes"]["item_count"])}
    terms: dict[tuple, list[tuple[float, str]]] = {}
    for lv, p, t, c in agg["term_counts"][["level", "prefix", "term", "count"]].itertuples(index=False):
        key = (int(lv), tuple(p))
        size = sizes[key]
        if size > 1 and c < 2:
            continue  # a term on a single item of a larger group says nothing about the group
        terms.setdefault(key, []).append((-(c / size) * idf.get(t, 0.0), t))
    cats: dict[tuple, list[tuple[int, str]]] = {}
    for lv, p, cat, c in agg["category_counts"][["level", "prefix", "category", "count"]].itertuples(index=False):
        cats.setdefault((int(lv), tuple(p)), []).append((-int(c), cat))
    examples: dict[tuple, list[str]] = {}
    for lv, p, _, title in agg["examples"][["level", "prefix", "item_id", "title"]].itertuples(index=False):
        examples.setdefault((int(lv), tuple(p)), []).append(title)
    prefixes = {}
    for key in sorted(sizes):
        lv, p = key
        best = sorted(cats.get(key, [(0, "")]))[0]
        prefixes[render_prefix(list(p))] = {
            "level": lv,
            "codes": list(p),
            "item_count": sizes[key],
            "category_path": best[1].split(" > ") if best[1] else [],
            "category_share": round(-best[0] / sizes[key], 4),
            "top_terms": [t for _, t in sorted(terms.get(key, []))[:top_terms]],
            "example_titles": examples.get(key, []),
        }
    return {"format": GLOSSARY_FORMAT, "items": int(agg["items"]), "prefix_levels": sorted({lv for lv, _ in sizes}), "prefixes": prefixes}


def load_glossary(path) -> dict[str, Any]:
    """Read ``glossary.json`` (e.g. ``layout.sid_artifacts / "glossary.json"``)."""
    import json
    from pathlib import Path

    return json.loads(Path(path).read_text())


def _default_render(codes: Sequence[int]) -> str:
    from tokenizer.render import TokenFormat

    return TokenFormat().render(codes)


def sid_semantics(glossary: dict[str, Any], sid: Sequence[int], *, render_prefix=None) -> list[dict[str, Any]]:
    """Glossary entries of a SID's prefixes, shortest first (level 1, then levels 1-2, ...).

    ``render_prefix`` must match the run's token format (``sid_format.json``); default ``<a_1><b_2>``.
    """
    render_prefix = render_prefix or _default_render
    out = []
    for lv in glossary["prefix_levels"]:
        entry = glossary["prefixes"].get(render_prefix(list(sid[:lv])))
        if entry is not None:
            out.append(entry)
    return out


def describe_sid(glossary: dict[str, Any], sid: Sequence[int], *, render_prefix=None) -> str:
    """One line an SFT template can use: deepest known prefix's category and terms."""
    entries = sid_semantics(glossary, sid, render_prefix=render_prefix)
    if not entries:
        return ""
    e = entries[-1]
    cat = " > ".join(e["category_path"][1:] or e["category_path"])
    terms = ", ".join(e["top_terms"][:5])
    return f"{cat} ({terms})" if cat and terms else (cat or terms)
