"""bundle: an item -> complementary items: frequently co-interacted (within ``bundle_window`` positions in
users' *training* histories, at least ``bundle_min_count`` times) and of a different category."""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.core import Template, make_record, pick_template, sid_list

NAME = "bundle"
LEVEL = "item"

TEMPLATES = (
    Template("Which items are often bought together with {item}? Suggest complementary products from other categories."),
    Template("Recommend complementary products to bundle with this item.", "{item}"),
    Template("A customer is buying {item}. What else should go in the bundle?"),
    Template("Suggest add-on items (different categories) that pair well with the product below.", "{item}"),
    Template("List the semantic IDs of products frequently purchased alongside this one.", "Item: {item}"),
    Template("Complete the bundle: the anchor product is {item}."),
    Template("What complements {item}? Answer with semantic IDs."),
    Template("Given the item below, recommend accessories or companion products.", "{item}"),
    Template("Build a product bundle around this item with items from other categories.", "{item}"),
    Template("Customers who got {item} also needed which other items?"),
)


def build_item(item: dict, split: str, ctx: BuildContext) -> list[dict]:
    complements = list(item.get("complements") or [])[: ctx.cfg.bundle_max_items]
    if not complements:
        return []
    key = item["item_id"]
    tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
    instruction, data = tpl.render(item=f"{item['sid']} \"{item['title']}\"")
    return [make_record(task=NAME, split=split, key=key, instruction=instruction, input=data, output=sid_list(complements),
                        mentioned=[item] + complements, targets=complements,
                        metadata={"template": tid, "counts": [c.get("count") for c in complements]})]
