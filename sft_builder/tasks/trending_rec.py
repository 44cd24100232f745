"""trending_rec: recommend items rising in a recent time window within the user's categories (SIGMA's
evolving trends). Needs timestamps: the Spark job skips it, with a logged reason, when the log has none.

Trends are computed at each split's cutoff T from the events before T only: an item rises when its
count in ``[T - W, T)`` exceeds its count in ``[T - 2W, T - W)`` (W = ``trend_window_days``); per
category, the top ``trend_top_k`` by growth. A training record uses the trends at the validation
cutoff and the user's training history; a test record those at the test cutoff and everything before
it. Items the user already has are never recommended.
"""

from __future__ import annotations

from collections import Counter

from schemas.sft import TEST, TRAIN
from sft_builder.context import BuildContext
from sft_builder.core import Template, make_record, pick_template, sid_list
from sft_builder.split import events_visible_at, max_event_ts, user_items

NAME = "trending_rec"
LEVEL = "user"
TOP_CATEGORIES = 2

TEMPLATES = (
    Template("Which items are trending right now in the categories this user likes?", "History: {history}"),
    Template("Recommend currently rising products matching the user's interests.", "{history}"),
    Template("Given the user's history, list popular new items gaining momentum in their categories.", "{history}"),
    Template("What's hot this week for a shopper who interacted with {history}?"),
    Template("Suggest trending items for this user (recent growth in their favourite categories).", "{history}"),
    Template("Based on recent trends and the history below, what should we show the user?", "{history}"),
    Template("Find rising items in {categories} for a user with history {history}."),
    Template("The user likes {categories}. Recommend items whose popularity is growing there.", "History: {history}"),
    Template("List trending semantic IDs relevant to this customer.", "Past items: {history}"),
    Template("Which recently popular products fit this user's taste?", "{history}"),
)


def build_user(user_id: str, events: list[dict], ctx: BuildContext) -> list[dict]:
    if not ctx.trending:
        return []
    records, owned = [], user_items(events)
    for split in (TRAIN, TEST):
        lists = ctx.trending.get(split)
        cutoff = ctx.trend_cutoffs.get(split)
        if not lists or cutoff is None:
            continue
        visible = [e for e in events_visible_at(events, split) if e.get("ts") is not None and e["ts"] < cutoff]
        history = visible[-ctx.cfg.max_history :]
        if len(history) < ctx.cfg.min_history:
            continue
        counts = Counter(e["category"] for e in visible if e.get("category"))
        categories = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]]
        answer = [it for c in categories for it in lists.get(c, []) if it["item_id"] not in owned][: ctx.cfg.trend_top_k]
        if not answer:
            continue
        key = f"{user_id}:{split}"
        tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
        instruction, data = tpl.render(history=sid_list(history), categories=", ".join(categories))
        records.append(make_record(
            task=NAME, split=split, key=key, instruction=instruction, input=data, output=sid_list(answer),
            mentioned=history + answer, targets=answer, user_id=user_id,
            # the answer is what is trending, not what this user did: not a held-out item of the user
            metadata={"template": tid, "targets_from_log": False, "categories": categories, "trend_cutoff": cutoff, "max_event_ts": max_event_ts(history)}))
    return records
