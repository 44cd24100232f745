"""Reader for the LC-Rec / LETTER layout: ``<name>.item.json`` and ``<name>.inter.json``.

``item.json`` maps an item index to ``{title, description, brand, categories}`` where categories is
one comma-joined path; ``inter.json`` maps a user index to that user's item list in time order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

# Category names themselves contain ", " ("Tapes, Adhesives & Sealants"): only a comma that is not
# followed by a space separates two levels of the path.
_CATEGORY_SEPARATOR = re.compile(r",(?! )")


def split_category_path(path: str | None) -> list[str] | None:
    if not path or not path.strip():
        return None
    parts = [p.strip() for p in _CATEGORY_SEPARATOR.split(path)]
    return [p for p in parts if p] or None


def iter_lcrec_items(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        items = json.load(fh)
    for item_id, fields in items.items():
        fields = fields if isinstance(fields, dict) else {}
        yield {
            "item_id": str(item_id),
            "title": fields.get("title"),
            "description": fields.get("description"),
            "brand": fields.get("brand"),
            "category_path": split_category_path(fields.get("categories")),
        }


def iter_lcrec_interactions(path: str | Path, *, event_type: str = "review") -> Iterator[dict]:
    """One row per (user, item) in log order; the layout carries no timestamps."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        users = json.load(fh)
    for user_id, item_ids in users.items():
        for item_id in item_ids or []:
            yield {"user_id": str(user_id), "item_id": str(item_id), "event_type": event_type}


def is_lcrec_pair(catalog: str | Path, interactions: str | Path) -> bool:
    return str(catalog).endswith(".item.json") and str(interactions).endswith(".inter.json")
