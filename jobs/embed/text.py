"""Render one catalog item into the text the embedding model reads. Plain Python, no Spark, no torch."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from jobs.embed.config import TEMPLATE_FIELDS, EmbedConfig
from schemas.catalog import C

assert set(TEMPLATE_FIELDS) <= set(vars(C)), "every template field must be a catalog column"

_WHITESPACE = re.compile(r"\s+")


class Reason(str, Enum):
    """Why the embed stage refused an item (the QUARANTINE `reason` column)."""

    NO_TEXT = "no_usable_text"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def clean(value: Any) -> str:
    """A scalar as one line of text: whitespace collapsed, '' when missing."""
    if _is_missing(value):
        return ""
    return _WHITESPACE.sub(" ", str(value)).strip()


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


def render_text(item: Mapping[str, Any], cfg: EmbedConfig) -> str:
    """The item's text per ``cfg.template``; '' when no part has all of its fields present.

    A part whose field is empty is dropped whole, so an item without a title falls back to brand,
    category and description, and no dangling labels ("Brand: ") reach the model.
    """
    values = {
        name: field_text(name, item.get(name), category_separator=cfg.category_separator)
        for name in TEMPLATE_FIELDS
    }
    parts = []
    for part in cfg.template:
        names = _part_fields(part)
        if all(values[n] for n in names):
            parts.append(part.format(**{n: values[n] for n in names}))
    return cfg.separator.join(parts)


def _part_fields(part: str) -> list[str]:
    import string

    return [name for _, name, _, _ in string.Formatter().parse(part) if name is not None]


def text_hash(text: str) -> str:
    """Cache key of a rendered text (128 bits: collisions stay negligible at billions of items)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


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
