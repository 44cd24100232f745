"""diverse_rec: history -> a list of the user's later items spanning several categories.

Every instruction starts with the task tag ``[diverse]`` so a model can tell it from ``next_item``
(SIGMA calibrates accuracy against diversity with such a switch). Training records: from a training
target onwards, the first later training item of each distinct category. Evaluation (``test`` only):
the user's held-out items of distinct categories, after the training history.
"""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.core import Template, make_record, pick_template, sid_list
from sft_builder.split import SPLIT, max_event_ts, train_events
from schemas.sft import TEST, TRAIN

NAME = "diverse_rec"
LEVEL = "user"
TAG = "[diverse]"

TEMPLATES = (
    Template(TAG + " Recommend a varied set of items from different categories for this user.", "History: {history}"),
    Template(TAG + " Based on the history below, suggest {k} items spanning several product categories.", "{history}"),
    Template(TAG + " The user interacted with {history}. Give diverse recommendations, one per category."),
    Template(TAG + " Propose a diverse list of next items (different categories) for a shopper with this history.", "{history}"),
    Template(TAG + " Avoid recommending only one kind of product: list items from multiple categories the user will choose.", "{history}"),
    Template(TAG + " Diversify: which items from distinct categories will this user interact with next?", "Items so far: {history}"),
    Template(TAG + " Recommend {k} products covering different needs of the user.", "{history}"),
    Template(TAG + " Given the user's past items, produce a category-diverse recommendation list of semantic IDs.", "{history}"),
    Template(TAG + " What different kinds of items will this customer buy next? History: {history}"),
    Template(TAG + " Build a recommendation list that spans several categories for the user below.", "History (oldest first): {history}"),
)


def distinct_categories(events: list[dict], limit: int) -> list[dict]:
    seen, out = set(), []
    for e in events:
        cat = e.get("category")
        if cat and cat not in seen:
            seen.add(cat)
            out.append(e)
    return out[:limit]


def build_user(user_id: str, events: list[dict], ctx: BuildContext) -> list[dict]:
    cfg, records = ctx.cfg, []
    candidates = []
    train = train_events(events)  # a prefix of the sequence in both split modes
    options = []
    for i in range(max(cfg.min_history, len(train) - 2 * cfg.max_history), len(train)):
        answer = distinct_categories(train[i:], cfg.diverse_max_items)
        if len(answer) >= cfg.diverse_min_categories:
            options.append((i, answer))
    for i, answer in options[-ctx.per_user(NAME):]:
        candidates.append((TRAIN, f"{user_id}:{i}", train[max(0, i - cfg.max_history) : i], answer))
    if len(train) >= cfg.min_history:
        held = [e for e in events if e[SPLIT] != TRAIN]
        history = train[-cfg.max_history :]
        candidates.append((TEST, f"{user_id}:{len(train)}", history, distinct_categories(held, cfg.diverse_max_items)))
    for split, key, history, answer in candidates:
        if len(answer) < cfg.diverse_min_categories:
            continue
        tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
        instruction, data = tpl.render(history=sid_list(history), k=len(answer))
        records.append(make_record(
            task=NAME, split=split, key=key, instruction=instruction, input=data, output=sid_list(answer),
            mentioned=history + answer, targets=answer, user_id=user_id,
            metadata={"template": tid, "categories": [e["category"] for e in answer], "history_length": len(history),
                      "max_event_ts": max_event_ts(history + answer)}))
    return records
