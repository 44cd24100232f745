"""search: a query -> the SIDs of the relevant items.

With logged queries (``query`` column of the log), one record per user, query and split: the items
that user engaged with under that query. Without them, queries are derived from the catalog: the
item's leaf category, brand and most distinctive title term (the rarest title word across the
catalog that is still shared by another item), in one of three forms chosen by hash; items sharing a
derived query are all relevant to it. Derived records carry ``"derived": true`` in their metadata.
"""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.core import Template, make_record, pick_template, sid_list
from schemas.sft import SPLITS
from sft_builder.split import QUERY, SPLIT, TRAIN, max_event_ts

NAME = "search"
LEVEL = "user+query"

TEMPLATES = (
    Template("A user searched for \"{query}\". Return the semantic IDs of the relevant items."),
    Template("Search query: {query}\nList the semantic IDs of the products that match."),
    Template("Which items should be shown for the query below? Answer with semantic IDs.", "{query}"),
    Template("Retrieve the products relevant to this search.", "Query: {query}"),
    Template("Find items matching \"{query}\" and give their semantic IDs."),
    Template("You are a product search engine. Return the semantic IDs of results for the query.", "{query}"),
    Template("A shopper typed \"{query}\" into the search box. Which items did they want?"),
    Template("Map the search query to the semantic IDs of relevant catalog items.", "Query: \"{query}\""),
    Template("Given the query \"{query}\", output the best matching item IDs."),
    Template("Answer the product search with semantic IDs of matching items.", "{query}"),
)


def derived_query(item: dict, term: str | None, form: int) -> str | None:
    """One of three query shapes from an item's catalog fields; None when the fields are missing."""
    category, brand = (item.get("category") or "").lower(), (item.get("brand") or "").lower()
    shapes = [f"{brand} {category}" if brand and category else None,
              f"{term} {category}" if term and category else None,
              f"{brand} {term}" if brand and term else None]
    for offset in range(3):
        if shapes[(form + offset) % 3]:
            return shapes[(form + offset) % 3].strip()
    return category or None


def build_query(query: str, items: list[dict], split: str, ctx: BuildContext, *, derived: bool, form: int | None = None) -> list[dict]:
    key = f"q:{query}"
    tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
    instruction, data = tpl.render(query=query)
    metadata = {"template": tid, "derived": derived, "query": query, "n_relevant": len(items)}
    if form is not None:
        metadata["query_form"] = form
    return [make_record(task=NAME, split=split, key=key, instruction=instruction, input=data, output=sid_list(items),
                        mentioned=items, targets=items, metadata=metadata)]


def build_user(user_id: str, events: list[dict], ctx: BuildContext) -> list[dict]:
    """Logged-query records: per split, the user's queries and the items engaged under each."""
    if not ctx.has_logged_queries:
        return []
    records = []
    for split, query, items, index in _queries_by_split(events, ctx):
        key = f"{user_id}:{index}:{query}"
        tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
        instruction, data = tpl.render(query=query)
        records.append(make_record(
            task=NAME, split=split, key=key, instruction=instruction, input=data, output=sid_list(items),
            mentioned=items, targets=items, user_id=user_id,
            metadata={"template": tid, "derived": False, "query": query, "max_event_ts": max_event_ts(items)}))
    return records


def _queries_by_split(events: list[dict], ctx: BuildContext):
    """(split, query, items, first index): the most recent ``per_user`` training queries and the earliest
    evaluation ones; a query's items are those engaged under it within its own split."""
    groups: dict[tuple[str, str], tuple[int, list[dict]]] = {}
    for i, event in enumerate(events):
        query = (event.get(QUERY) or "").strip()
        if query:
            groups.setdefault((event[SPLIT], query), (i, []))[1].append(event)
    out = []
    for split in SPLITS:
        ordered = sorted((index, query, items) for (s, query), (index, items) in groups.items() if s == split)
        chosen = ordered[-ctx.per_user(NAME):] if split == TRAIN else ordered[: ctx.cfg.eval_targets_per_user]
        out.extend((split, query, items[: ctx.cfg.search_max_items], index) for index, query, items in chosen)
    return out
