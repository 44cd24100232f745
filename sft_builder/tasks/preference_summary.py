"""preference_summary: history -> a structured statement of the user's preferences, computed from the data
(counts of categories, brands and price bands in the history; no LLM involved).

One record per split: training from the training history, evaluation from the history an evaluation
record of that split may see (everything before the split's held-out events).
"""

from __future__ import annotations

from collections import Counter

from schemas.sft import SPLITS
from sft_builder.context import BuildContext
from sft_builder.core import Template, dumps_sorted, make_record, pick_template, sid_list
from sft_builder.split import events_visible_at, max_event_ts

NAME = "preference_summary"
LEVEL = "user"
TOP = 3

TEMPLATES = (
    Template("Summarise this user's preferences (top categories, brands and price band) from their history.", "{history}"),
    Template("What does this shopper like? Answer as JSON with top_categories, top_brands and price_band.", "History: {history}"),
    Template("Analyse the purchase history below and describe the user's preferred categories, brands and price range.", "{history}"),
    Template("From the items {history}, infer the user's preference profile."),
    Template("Build a preference profile for a customer who interacted with these items.", "{history}"),
    Template("Which categories and brands does this user favour, and at what price level?", "Items: {history}"),
    Template("Given the {n} items below, state the user's main interests as structured data.", "{history}"),
    Template("Produce the user's shopping preferences (categories, brands, price band) from their history.", "{history}"),
    Template("Describe the taste of a user whose history is {history}."),
    Template("Extract the user's preferred product categories, brands and price band.", "Interaction history: {history}"),
)


def summarize(history: list[dict]) -> dict:
    """Top categories, brands and price bands by count (ties broken by name), plus the history size."""

    def top(key: str) -> list[dict]:
        counts = Counter(e.get(key) for e in history if e.get(key))
        return [{"name": name, "count": c} for name, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]]

    bands = top("price_band")
    return {
        "top_categories": top("category"),
        "top_brands": top("brand"),
        "price_band": bands[0]["name"] if bands else None,
        "n_items": len(history),
    }


def build_user(user_id: str, events: list[dict], ctx: BuildContext) -> list[dict]:
    records = []
    for split in SPLITS:
        visible = events_visible_at(events, split)
        if split != "train" and len(visible) == len(events):
            continue  # no held-out events of this split
        history = visible[-ctx.cfg.max_history :]
        if len(history) < max(ctx.cfg.min_history, 1):
            continue
        key = f"{user_id}:{split}"
        tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
        instruction, data = tpl.render(history=sid_list(history), n=len(history))
        output = dumps_sorted(summarize(history))
        records.append(make_record(
            task=NAME, split=split, key=key, instruction=instruction, input=data, output=output, mentioned=history,
            user_id=user_id, metadata={"template": tid, "history_length": len(history), "max_event_ts": max_event_ts(history)}))
    return records
