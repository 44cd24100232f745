"""next_item: the user's SID history -> the SID of the next item (the classic sequential task)."""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.core import Template, make_record, pick_template, sid_list
from sft_builder.split import max_event_ts
from sft_builder.tasks.base import user_targets

NAME = "next_item"
LEVEL = "user"

TEMPLATES = (
    Template("Here is the sequence of items a user interacted with, as semantic IDs. Predict the next item the user will interact with.", "{history}"),
    Template("Given the user's purchase history below, which item will they buy next? Answer with its semantic ID.", "History: {history}"),
    Template("A shopper has engaged with these products in order: {history}. Recommend the single item they are most likely to choose next."),
    Template("Based on the interaction history, generate the semantic ID of the next item.", "Interaction history (oldest first): {history}"),
    Template("You are a recommender system. The user's recent items are listed below. Output the semantic ID of the item to recommend next.", "{history}"),
    Template("What will this customer interact with after {history}? Reply with one semantic ID."),
    Template("Predict the next product for a user whose history is: {history}"),
    Template("Using the chronological list of items the user has interacted with, identify the next item.", "Items so far: {history}"),
    Template("The user has viewed or bought the following {n} items. Which item comes next in their sequence?", "{history}"),
    Template("Continue the user's item sequence with the most likely next item (semantic ID only).", "Sequence: {history}"),
    Template("Given that a customer recently interacted with {history}, what should we recommend to them next?"),
)


def build_user(user_id: str, events: list[dict], ctx: BuildContext) -> list[dict]:
    records = []
    for target in user_targets(NAME, events, ctx):
        item, history = events[target.index], list(target.history)
        key = target.key(user_id)
        tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
        instruction, data = tpl.render(history=sid_list(history), n=len(history))
        records.append(
            make_record(
                task=NAME, split=target.split, key=key, instruction=instruction, input=data, output=item["sid"],
                mentioned=history + [item], targets=[item], user_id=user_id,
                metadata={"template": tid, "history_length": len(history), "max_event_ts": max_event_ts(history + [item])},
            )
        )
    return records

