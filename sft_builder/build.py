"""Per-row entry points the Spark job maps over users, items, derived queries and glossary prefixes.

Each returns SFT_RECORDS dicts plus ``CONTENT`` (the dedup key, see :func:`sft_builder.core.content_hash`).
A builder that fails on one row raises with the row's key in the message instead of a bare worker trace.
"""

from __future__ import annotations

from typing import Iterable

from schemas.sft import TEST, TRAIN, VALIDATION
from sft_builder.context import BuildContext
from sft_builder.core import content_hash, stable_fraction
from sft_builder.tasks import TASKS, search, sid_semantics

CONTENT = "_content"


def key_split(key: str, eval_fraction: float) -> str:
    """Split of a record that has no user (item, query, prefix): hashed, independent of the seed so that
    changing the seed re-samples templates but never moves an item between splits."""
    u = stable_fraction("split", key)
    return TEST if u < eval_fraction else VALIDATION if u < 2 * eval_fraction else TRAIN


def _finish(records: Iterable[dict]) -> list[dict]:
    out = []
    for record in records:
        record[CONTENT] = content_hash(record)
        out.append(record)
    return out


def build_user_records(user_id: str, events: list[dict], ctx: BuildContext, tasks: Iterable[str]) -> list[dict]:
    out: list[dict] = []
    for name in tasks:
        module = TASKS[name]
        if hasattr(module, "build_user"):
            try:
                out.extend(module.build_user(user_id, events, ctx))
            except Exception as exc:  # noqa: BLE001 - re-raised with the row that caused it
                raise RuntimeError(f"task {name} failed for user {user_id!r}: {exc!r}") from exc
    return _finish(out)


def build_item_records(item: dict, ctx: BuildContext, tasks: Iterable[str]) -> list[dict]:
    split = key_split(item["item_id"], ctx.cfg.item_eval_fraction)
    out: list[dict] = []
    for name in tasks:
        module = TASKS[name]
        if hasattr(module, "build_item"):
            try:
                out.extend(module.build_item(item, split, ctx))
            except Exception as exc:  # noqa: BLE001
                raise RuntimeError(f"task {name} failed for item {item.get('item_id')!r}: {exc!r}") from exc
    return _finish(out)


def build_query_records(query: str, items: list[dict], form: int | None, ctx: BuildContext) -> list[dict]:
    split = key_split(f"q:{query}", ctx.cfg.item_eval_fraction)
    return _finish(search.build_query(query, items, split, ctx, derived=True, form=form))


def build_glossary_records(glossary: dict, ctx: BuildContext) -> list[dict]:
    """sid_semantics records of every prefix in a glossary (bounded by the number of prefixes)."""
    out: list[dict] = []
    prefixes = glossary.get("prefixes") or {}
    for prefix, entry in sorted(prefixes.items(), key=lambda kv: (int(kv[1].get("level", 0)), kv[0])):
        level = int(entry.get("level", 0))
        split = key_split(f"p:{level}:{prefix}", ctx.cfg.item_eval_fraction)
        out.extend(sid_semantics.build_prefix(level, prefix, entry, split, ctx))
    return _finish(out)
