"""sid_semantics: a SID prefix -> what kind of product it denotes, from the SID glossary.

Reads the glossary written by the sids stage (``sid_artifacts/glossary.json``, see tokenizer/glossary.py)::

    {"format": 1, "items": int, "prefix_levels": [1, 2],
     "prefixes": {"<a_12>": {"level": 1, "item_count": int, "category_path": [str], "category_share": float,
                             "top_terms": [str], "example_titles": [str], "codes": [int]},
                  "<a_12><b_201>": {"level": 2, ...}}}

One record per prefix; a prefix without a category and without terms says nothing and is skipped.
"""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.core import Template, make_record, pick_template

NAME = "sid_semantics"
LEVEL = "prefix"
MAX_TERMS, MAX_EXAMPLES = 8, 3

TEMPLATES = (
    Template("What kind of products does the semantic ID prefix {prefix} denote?"),
    Template("Explain the meaning of this SID prefix.", "{prefix}"),
    Template("Items whose semantic IDs start with {prefix} have what in common?"),
    Template("Describe the product group encoded by the prefix below.", "Prefix: {prefix}"),
    Template("I see the tokens {prefix} at the start of an item ID. What type of item is it likely to be?"),
    Template("Interpret the semantic ID prefix {prefix}: which category and typical terms does it cover?"),
    Template("What products live under {prefix} in the semantic ID tree?"),
    Template("Give a short description of the items sharing the code prefix below.", "{prefix}"),
    Template("Summarise the category and vocabulary of items with SID prefix {prefix}."),
    Template("Decode the level-{level} code {prefix} into a product description."),
)


def describe_prefix(entry: dict) -> str | None:
    category = " > ".join(p for p in (entry.get("category_path") or []) if p).strip()
    terms = [t for t in (entry.get("top_terms") or []) if t][:MAX_TERMS]
    examples = [x for x in (entry.get("example_titles") or []) if x][:MAX_EXAMPLES]
    if not category and not terms:
        return None
    parts = [f"Mostly {category}." if category else "Mixed categories."]
    if terms:
        parts.append("Typical terms: " + ", ".join(terms) + ".")
    if examples:
        parts.append("Examples: " + "; ".join(examples) + ".")
    if entry.get("item_count") is not None:
        parts.append(f"{entry['item_count']} items.")
    return " ".join(parts)


def build_prefix(level: int, prefix: str, entry: dict, split: str, ctx: BuildContext) -> list[dict]:
    output = describe_prefix(entry)
    if output is None:
        return []
    key = f"{level}:{prefix}"
    tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
    instruction, data = tpl.render(prefix=prefix, level=level)
    return [make_record(task=NAME, split=split, key=key, instruction=instruction, input=data, output=output, mentioned=[],
                        metadata={"template": tid, "level": level, "prefix": prefix, "count": entry.get("item_count")})]
