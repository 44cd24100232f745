"""Render one catalog item into the text the embedding model reads. Plain Python, no Spark, no torch."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import string
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from jobs.embed.config import TEMPLATE_FIELDS, EmbedConfig
from schemas.catalog import C

assert set(TEMPLATE_FIELDS) <= set(vars(C)), "every template field must be a catalog column"


class Reason(str, Enum):
    """Why the embed stage refused an item (the QUARANTINE `reason` column)."""

    NO_TEXT = "no_usable_text"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def clean(value: Any) -> str:
    """A scalar as one line of text: whitespace collapsed, '' when missing."""
    if _is_missing(value):
        return ""
    # str.split() splits on exactly the characters regex \s matches, at a third of re.sub's cost
    return " ".join(str(value).split())


def field_text(name: str, value: Any, *, category_separator: str) -> str:
    """The text of one catalog field ('' when it carries nothing usable)."""
    if _is_missing(value):
        return ""
    if name == C.category_path:
        # Arrow lists arrive as numpy arrays from pandas, as lists from Python callers.
        parts = [clean(p) for p in (list(value) if not isinstance(value, str) else [value])]
        return category_separator.join(p for p in parts if p)
    if name == C.attributes:
        pairs = value.items() if isinstance(value, Mapping) else value  # Arrow maps: list of (key, value)
        cleaned = sorted((clean(k), clean(v)) for k, v in pairs)
        return "; ".join(f"{k}: {v}" for k, v in cleaned if k and v)
    return clean(value)


def render_text(item: Mapping[str, Any], cfg: EmbedConfig, template: Sequence[str] | None = None) -> str:
    """The item's text per ``template`` (default ``cfg.template``); '' when no part has all of its fields.

    A part whose field is empty is dropped whole, so an item without a title falls back to brand,
    category and description, and no dangling labels ("Brand: ") reach the model.
    """
    template = cfg.template if template is None else template
    return _render(template, _field_values(item, cfg, template), cfg.separator)


def _field_values(item: Mapping[str, Any], cfg: EmbedConfig, *templates: Sequence[str]) -> dict[str, str]:
    """The text of every field the templates name, each cleaned once."""
    names = {n for template in templates for part in template for n in _part_fields(part)}
    return {n: field_text(n, item.get(n), category_separator=cfg.category_separator) for n in sorted(names)}


def _render(template: Sequence[str], values: Mapping[str, str], separator: str) -> str:
    parts = []
    for part in template:
        names = _part_fields(part)
        if all(values[n] for n in names):
            parts.append(part.format(**{n: values[n] for n in names}))
    return separator.join(parts)


def render_views(item: Mapping[str, Any], cfg: EmbedConfig) -> list[str]:
    """[main text, one text per ``cfg.views``]; '' where a view renders nothing."""
    templates = [cfg.template] + [view.template for view in cfg.views]
    values = _field_values(item, cfg, *templates)
    return [_render(template, values, cfg.separator) for template in templates]


def view_weights(cfg: EmbedConfig) -> list[float]:
    """Weight of each text of ``render_views``: the main text counts 1."""
    return [1.0] + [view.weight for view in cfg.views]


def item_key(texts: Sequence[str], cfg: EmbedConfig) -> str:
    """The item's ``text_hash``: changes exactly when its vector's inputs change.

    With no views it is the main text's hash (the cache key of its vector); with views it also
    covers each view's text and weight.
    """
    if not cfg.views:
        return text_hash(texts[0])
    return text_hash(json.dumps([[w, t] for w, t in zip(view_weights(cfg), texts)], ensure_ascii=False))


def vector_fingerprint(encoder_fingerprint: str, cfg: EmbedConfig) -> str:
    """What the item vectors' ``model_fingerprint`` says: the encoder, plus the views blended in.

    A codebook is tied to this value, so changing a view's template or weight is a new embedding space
    (the frozen codebook is refused), while the per-text cache stays keyed by the encoder alone.
    """
    if not cfg.views:
        return encoder_fingerprint
    from jobs.common.config import hash_json

    return f"{encoder_fingerprint}+views-{hash_json([view.to_dict() for view in cfg.views])[:8]}"


def blend_views(vectors: Sequence[Any], weights: Sequence[float]):
    """normalise(sum(weight * vector)) over the texts that have a vector (None = view empty), float32.

    Summed in float64 in a fixed order, so the Spark job and a plain-Python caller get the same bits.
    """
    import numpy as np

    total = None
    for vector, weight in zip(vectors, weights):
        if vector is None:
            continue
        term = float(weight) * np.asarray(vector, dtype=np.float64)
        total = term if total is None else total + term
    return (total / np.linalg.norm(total)).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _part_fields(part: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(part) if name is not None)


def text_hash(text: str) -> str:
    """Cache key of a rendered text (128 bits: collisions stay negligible at billions of items)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def embed_items(items: Sequence[Mapping[str, Any]], cfg: EmbedConfig, encode) -> Any:
    """The stage's item vectors without Spark: ``encode(list[str]) -> array`` runs the model.

    Each distinct text is encoded once, in sorted order; items must all have a main text.
    """
    import numpy as np

    texts = [render_views(item, cfg) for item in items]
    distinct = sorted({t for ts in texts for t in ts if t})
    vectors = dict(zip(distinct, encode(distinct)))
    weights = view_weights(cfg)
    return np.stack([blend_views([vectors[t] if t else None for t in ts], weights) for ts in texts])


def primary_field_missing(item: Mapping[str, Any], cfg: EmbedConfig) -> bool:
    """True when the first template part's fields are empty: the text fell back to the other parts."""
    names = _part_fields(cfg.template[0])
    return not all(field_text(n, item.get(n), category_separator=cfg.category_separator) for n in names)


def record_json(item: Mapping[str, Any], columns: Sequence[str]) -> str:
    """The item as JSON for the quarantine table (for a person to read)."""

    def plain(value: Any) -> Any:
        if _is_missing(value):
            return None
        if hasattr(value, "tolist"):
            return value.tolist()
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, (str, int, float, bool)):
            return value
        return str(value)

    return json.dumps({c: plain(item.get(c)) for c in columns}, ensure_ascii=False, sort_keys=True)
