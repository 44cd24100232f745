"""item_to_sid: an item's title (and, in some templates, its description) -> its SID (grounding)."""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.core import Template, make_record, pick_template

NAME = "item_to_sid"
LEVEL = "item"
DESCRIPTION_CHARS = 300

TEMPLATES = (
    Template("What is the semantic ID of the product titled \"{title}\"?"),
    Template("Give the semantic ID of this item.", "Title: {title}"),
    Template("Encode the following product as a semantic ID.", "Title: {title}\nDescription: {description}"),
    Template("Which semantic ID does the catalog assign to the item below?", "{title}"),
    Template("Map this product to its semantic ID.", "Product: {title}\nDetails: {description}"),
    Template("Find the semantic ID for the product \"{title}\"."),
    Template("An item is described as follows. Output its semantic ID.", "{title}. {description}"),
    Template("Convert the product title into its item tokens.", "{title}"),
    Template("You know every item in the catalog by its semantic ID. Which one is \"{title}\"?"),
    Template("Return the semantic ID of the product with this title and description.", "Title: {title}\nDescription: {description}"),
)


def build_item(item: dict, split: str, ctx: BuildContext) -> list[dict]:
    key = item["item_id"]
    tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
    description = (item.get("description") or "").strip()[:DESCRIPTION_CHARS] or "(no description)"
    instruction, data = tpl.render(title=item["title"], description=description)
    return [
        make_record(task=NAME, split=split, key=key, instruction=instruction, input=data, output=item["sid"],
                    mentioned=[item], targets=[item], metadata={"template": tid})
    ]
