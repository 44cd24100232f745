"""Plain-Python building blocks of every task: stable hashing, templates, item rendering, records.

Nothing here imports Spark: the Spark job (``jobs/sft``) ships these functions to its workers, and the
unit tests call them directly. Every random-looking choice (template, negatives, shuffles) is a hash of
the record's key and the seed, so it never depends on Python's random state or on read order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from schemas.sft import C as R

# Keys of the item dicts the builders receive (one per catalog item, joined with its SID).
ITEM_ID, SID, TITLE, BRAND, CATEGORY, CATEGORY_PATH, PRICE_BAND, PREFIX = (
    "item_id",
    "sid",
    "title",
    "brand",
    "category",
    "category_path",
    "price_band",
    "prefix",
)
ITEM_KEYS = (ITEM_ID, SID, TITLE, BRAND, CATEGORY, CATEGORY_PATH, PRICE_BAND, PREFIX)


def stable_hash(*parts: Any) -> int:
    """64-bit hash of the parts' text; the same on every machine, process and Python version."""
    text = "\x1f".join([p if isinstance(p, str) else ("" if p is None else str(p)) for p in parts])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


# json.dumps(..., sort_keys=True, ensure_ascii=False) without building an encoder per call (same output)
dumps_sorted = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode
dumps_unicode = json.JSONEncoder(ensure_ascii=False).encode


def stable_fraction(*parts: Any) -> float:
    """A value in [0, 1) fixed by the parts: for deterministic sampling and splits."""
    return stable_hash(*parts) / 2.0**64


def hash_order(items: Iterable[Any], *parts: Any, key=lambda x: x) -> list:
    """The items in an order fixed by (parts, item key): a deterministic shuffle."""
    return sorted(items, key=lambda it: (stable_hash(*parts, key(it)), key(it)))


def hash_sample(pool, count: int, *parts, skip=frozenset(), key=lambda x: x, max_tries: int = 4) -> list:
    """Up to ``count`` distinct items of ``pool`` at hashed positions, skipping keys in ``skip``: cost in
    O(count), independent of the pool's size (a full ``hash_order`` would hash every item)."""
    if not pool:
        return []
    out, taken = [], set(skip)
    for attempt in range(count * max_tries):
        if len(out) >= count:
            break
        cand = pool[stable_hash(*parts, attempt) % len(pool)]
        k = key(cand)
        if k not in taken:
            taken.add(k)
            out.append(cand)
    return out


def record_id(task: str, split: str, key: str) -> str:
    return f"{stable_hash(task, split, key):016x}"


@dataclass(frozen=True)
class Template:
    """One paraphrase: the instruction text and how the input data is laid out (``str.format`` fields)."""

    instruction: str
    input: str = ""

    def render(self, **fields: Any) -> tuple[str, str]:
        return self.instruction.format(**fields), self.input.format(**fields)


def pick_template(templates: Sequence[Template], key: str, seed: int) -> tuple[int, Template]:
    index = stable_hash("template", key, seed) % len(templates)
    return index, templates[index]


def sid_list(items: Sequence[dict]) -> str:
    return ", ".join(it[SID] for it in items)


def title_list(items: Sequence[dict]) -> str:
    return "; ".join(f'"{it[TITLE]}"' for it in items)


def numbered_titles(items: Sequence[dict]) -> str:
    return "\n".join(f"{i}. {it[TITLE]}" for i, it in enumerate(items, 1))


def describe(item: dict) -> str:
    """SID plus title: how an item is shown when both are wanted."""
    return f"{item[SID]} {item[TITLE]}"


def category_text(item: dict) -> str:
    path = [p for p in (item.get(CATEGORY_PATH) or []) if p]
    return " > ".join(path) if path else (item.get(CATEGORY) or "unknown")


def user_message(instruction: str, data: str) -> str:
    return f"{instruction}\n\n{data}" if data else instruction


def chat(instruction: str, data: str, output: str) -> list[dict]:
    return [{"role": "user", "content": user_message(instruction, data)}, {"role": "assistant", "content": output}]


def make_record(
    *,
    task: str,
    split: str,
    key: str,
    instruction: str,
    input: str,
    output: str,
    mentioned: Sequence[dict],
    targets: Sequence[dict] = (),
    user_id: str | None = None,
    metadata: dict | None = None,
    messages: list[dict] | None = None,
    sid_mentions: Sequence[dict] | None = None,
) -> dict:
    """One SFT_RECORDS row. ``mentioned``: every item the record refers to (by SID or by title);
    ``sid_mentions``: those referred to by SID (default: all of ``mentioned``)."""
    by_sid = mentioned if sid_mentions is None else sid_mentions
    messages = messages or chat(instruction, input, output)
    return {
        R.id: record_id(task, split, key),
        R.task: task,
        R.split: split,
        R.messages: messages,
        R.instruction: instruction,
        R.input: input,
        R.output: output,
        R.user_id: user_id,
        R.target_item_ids: [t[ITEM_ID] for t in targets],
        R.sids: _unique(it[SID] for it in by_sid),
        R.item_ids: _unique(it[ITEM_ID] for it in mentioned),
        R.metadata: dumps_sorted({"key": key, **(metadata or {})}),
    }


def content_hash(record: dict) -> str:
    """What makes two records identical: task and the conversation (ids and splits aside)."""
    text = "\x1e".join([record[R.task]] + [f"{m['role']}\x1f{m['content']}" for m in record[R.messages]])
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _unique(values: Iterable[str]) -> list[str]:
    """The distinct non-null values, in first-seen order."""
    seen = dict.fromkeys(values)
    seen.pop(None, None)
    return list(seen)
