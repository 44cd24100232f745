"""constrained_rec: history + an explicit constraint (category, brand or price band) -> the user's actual
later items that satisfy it.

The constraint is an attribute of the target event (which attribute: by hash among those the item
has); the answer lists the target and the user's later events of the same split that share it.
"""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.core import Template, make_record, pick_template, sid_list, stable_hash
from sft_builder.split import SPLIT, max_event_ts
from sft_builder.tasks.base import user_targets

NAME = "constrained_rec"
LEVEL = "user"
ATTRIBUTES = ("category", "brand", "price_band")
PHRASES = {"category": "in the category \"{value}\"", "brand": "from the brand \"{value}\"", "price_band": "priced {value}"}

TEMPLATES = (
    Template("The user's history is {history}. Recommend items {constraint}."),
    Template("Given the purchase history below, recommend what the user will buy next {constraint}.", "{history}"),
    Template("Constraint: only items {constraint}. History: {history}. Which items will the user choose?"),
    Template("A shopper now wants products {constraint}. Based on their past items, list the semantic IDs they will pick.", "{history}"),
    Template("Recommend products {constraint} for a user who interacted with {history}."),
    Template("Filter your recommendations to items {constraint}. What will this user interact with next?", "History: {history}"),
    Template("Using the history below, predict the user's upcoming items that are {constraint}.", "{history}"),
    Template("The customer asks for something {constraint}. Their history: {history}. Answer with semantic IDs."),
    Template("Suggest the items this user will actually choose {constraint}.", "Past items: {history}"),
    Template("Which of the user's next items satisfy the requirement \"{constraint}\"? History: {history}"),
)


def build_user(user_id: str, events: list[dict], ctx: BuildContext) -> list[dict]:
    records = []
    for target in user_targets(NAME, events, ctx):
        item, history = events[target.index], list(target.history)
        key = target.key(user_id)
        available = [a for a in ATTRIBUTES if item.get(a)]
        if not available:
            continue
        attribute = available[stable_hash(NAME, "attribute", key, ctx.seed) % len(available)]
        value = item[attribute]
        later = [e for e in events[target.index :] if e[SPLIT] == target.split and e.get(attribute) == value]
        answer = later[: ctx.cfg.constrained_max_items]
        tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
        instruction, data = tpl.render(history=sid_list(history), constraint=PHRASES[attribute].format(value=value))
        records.append(make_record(
            task=NAME, split=target.split, key=key, instruction=instruction, input=data, output=sid_list(answer),
            mentioned=history + answer, targets=answer, user_id=user_id,
            metadata={"template": tid, "constraint": {attribute: value}, "history_length": len(history),
                      "max_event_ts": max_event_ts(history + answer)}))
    return records
