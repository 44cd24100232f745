"""next_item_from_text: the history as titles -> the next item's SID, and the SID history -> the next
item's title. Each target gets one direction, chosen by hash (``metadata.direction``)."""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.core import Template, make_record, numbered_titles, pick_template, sid_list, stable_hash
from sft_builder.split import max_event_ts
from sft_builder.tasks.base import user_targets

NAME = "next_item_from_text"
LEVEL = "user"
TEXT_TO_SID, SID_TO_TEXT = "titles_to_sid", "sids_to_title"

TEMPLATES_TEXT_TO_SID = (
    Template("A user bought the following products, oldest first. Give the semantic ID of the product they will buy next.", "{history}"),
    Template("Here are the titles of items a shopper interacted with. Predict the next item as a semantic ID.", "{history}"),
    Template("Read the user's history of product titles and recommend the next item. Answer with a semantic ID.", "History:\n{history}"),
    Template("The customer's recent purchases are listed by title below. Which item (semantic ID) comes next?", "{history}"),
    Template("Given these {n} products the user engaged with, output the semantic ID of their next product.", "{history}"),
    Template("You see a user's shopping history written as product names. Recommend the next item by its semantic ID.", "{history}"),
    Template("Predict the semantic ID of the next purchase for a user with this history:", "{history}"),
    Template("Based on the product titles below (in the order they were bought), what is the user's next item? Reply with its semantic ID.", "{history}"),
    Template("Translate this title-based purchase history into a next-item recommendation, given as a semantic ID.", "{history}"),
    Template("Which item should be recommended next to someone who interacted with these products?", "{history}"),
)

TEMPLATES_SID_TO_TEXT = (
    Template("Here is a user's history as semantic IDs. Write the title of the product they will interact with next.", "{history}"),
    Template("Given the semantic ID sequence below, describe the next item the user will buy by its title.", "History: {history}"),
    Template("The user interacted with {history}. What is the title of the next product they will choose?"),
    Template("Predict the next item's title for a shopper whose history (semantic IDs, oldest first) is:", "{history}"),
    Template("From these {n} semantic IDs of past purchases, name the product the user will want next.", "{history}"),
    Template("As a recommender, read the SID history and answer with the product title of the recommended next item.", "{history}"),
    Template("What product title comes next in this user's sequence?", "Sequence: {history}"),
    Template("A customer's interactions are encoded as semantic IDs below. Which product, by title, will they pick next?", "{history}"),
    Template("Recommend the next product for this user and give its title rather than its semantic ID.", "{history}"),
    Template("Based on the semantic IDs of the items this user engaged with, write the title of their likely next item.", "Items: {history}"),
)
TEMPLATES = TEMPLATES_TEXT_TO_SID + TEMPLATES_SID_TO_TEXT


def build_user(user_id: str, events: list[dict], ctx: BuildContext) -> list[dict]:
    records = []
    for target in user_targets(NAME, events, ctx):
        item, history = events[target.index], list(target.history)
        key = target.key(user_id)
        direction = TEXT_TO_SID if stable_hash(NAME, "direction", key, ctx.seed) % 2 == 0 else SID_TO_TEXT
        if direction == TEXT_TO_SID:
            tid, tpl = pick_template(TEMPLATES_TEXT_TO_SID, f"{NAME}:{key}", ctx.seed)
            instruction, data = tpl.render(history=numbered_titles(history), n=len(history))
            output, by_sid = item["sid"], [item]
        else:
            tid, tpl = pick_template(TEMPLATES_SID_TO_TEXT, f"{NAME}:{key}", ctx.seed)
            instruction, data = tpl.render(history=sid_list(history), n=len(history))
            output, by_sid = item["title"], history
            tid += len(TEMPLATES_TEXT_TO_SID)
        records.append(
            make_record(
                task=NAME, split=target.split, key=key, instruction=instruction, input=data, output=output,
                mentioned=history + [item], sid_mentions=by_sid, targets=[item], user_id=user_id,
                metadata={"template": tid, "direction": direction, "history_length": len(history),
                          "max_event_ts": max_event_ts(history + [item])},
            )
        )
    return records
