"""sid_to_item: a SID -> the item's title, brand and category (grounding SIDs in the catalog)."""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.core import Template, category_text, make_record, pick_template

NAME = "sid_to_item"
LEVEL = "item"

TEMPLATES = (
    Template("Which product does the semantic ID {sid} refer to? Give its title, brand and category."),
    Template("Describe the item with this semantic ID: title, brand and category.", "{sid}"),
    Template("Decode the semantic ID into the product it stands for.", "Semantic ID: {sid}"),
    Template("What is {sid}? Answer with the product's title, brand and category."),
    Template("You are given an item's semantic ID. Tell me what the item is.", "{sid}"),
    Template("Look up the catalog entry for {sid} and report its title, brand and category."),
    Template("Translate the following semantic ID into a product description.", "{sid}"),
    Template("Identify the product encoded by the semantic ID below.", "{sid}"),
    Template("Name the item, its brand and its category for semantic ID {sid}."),
    Template("Given the item token sequence {sid}, what product is it?"),
)


def build_item(item: dict, split: str, ctx: BuildContext) -> list[dict]:
    key = item["item_id"]
    tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
    instruction, data = tpl.render(sid=item["sid"])
    output = f"Title: {item['title']}\nBrand: {item.get('brand') or 'unknown'}\nCategory: {category_text(item)}"
    return [
        make_record(task=NAME, split=split, key=key, instruction=instruction, input=data, output=output,
                    mentioned=[item], targets=[item], metadata={"template": tid})
    ]
