"""Valid-SID prefix trie for constrained decoding.

JSON format (``sid_trie.json``)::

    {"format": "1", "length": 3, "items": 4344,
     "trie": {"<a_12>": {"<b_201>": {"<c_7>": "item_id", ...}, ...}, ...}}

Interior nodes map the next allowed token to a subtree; a leaf holds the item_id of that SID.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

TRIE_FORMAT = "1"


def build_trie(entries: Iterable[tuple[Sequence[str], str]]) -> dict[str, Any]:
    """``entries``: (token list of one SID, item_id). Raises if two items share one SID."""
    root: dict[str, Any] = {}
    length = None
    count = 0
    for tokens, item_id in entries:
        tokens = list(tokens)
        if length is None:
            length = len(tokens)
        elif len(tokens) != length:
            raise ValueError(f"SIDs must have a fixed length: {tokens} for item {item_id} has {len(tokens)}, expected {length}")
        node = root
        for tok in tokens[:-1]:
            node = node.setdefault(tok, {})
            if not isinstance(node, dict):
                raise ValueError(f"SID prefix {tokens} of item {item_id} collides with a full SID")
        if tokens[-1] in node:
            raise ValueError(f"items {node[tokens[-1]]} and {item_id} share the SID {''.join(tokens)}")
        node[tokens[-1]] = str(item_id)
        count += 1
    return {"format": TRIE_FORMAT, "length": length or 0, "items": count, "trie": _sorted(root)}


def _sorted(node: Any) -> Any:
    return {k: _sorted(node[k]) for k in sorted(node)} if isinstance(node, dict) else node


def allowed_next(trie: dict[str, Any], prefix: Sequence[str]) -> list[str]:
    """Tokens that may follow ``prefix`` (empty list when the prefix is complete or invalid)."""
    node: Any = trie["trie"]
    for tok in prefix:
        if not isinstance(node, dict) or tok not in node:
            return []
        node = node[tok]
    return sorted(node) if isinstance(node, dict) else []


def lookup(trie: dict[str, Any], tokens: Sequence[str]) -> str | None:
    """item_id of a complete SID, or None."""
    node: Any = trie["trie"]
    for tok in tokens:
        if not isinstance(node, dict) or tok not in node:
            return None
        node = node[tok]
    return node if isinstance(node, str) else None
