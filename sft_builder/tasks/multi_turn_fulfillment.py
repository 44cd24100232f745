"""multi_turn_fulfillment (ShopX): a multi-turn shopping dialogue built from a real session of the log.

The session is the target event's session (events sharing its ``session_id`` before it) when the log
has sessions, otherwise the ``session_window`` events before it. The user states an intent (the
target's category, with the session's earlier items as context); the assistant acts through a JSON
action protocol and receives catalog results as ``tool`` messages; the user refines; the assistant
answers with SIDs. The target (the item the user actually chose next) is always among the results.

JSON action protocol (one JSON object per assistant action message)::

    {"action": "retrieve", "query": "<text>"}          # catalog search by text (here: the category)
    {"action": "retrieve", "sid_prefix": "<a_12>"}     # every item under a SID prefix
    {"action": "filter", "constraint": {"brand": "X"}} # or {"price_band": "$10-25"} / {"category": ...}
    {"action": "rank", "by": "user_history"}           # order the current results for this user
    {"action": "bundle", "sid": "<a_1><b_2><c_3>"}     # complementary items for one item

Observations (``tool`` messages) are JSON: ``{"results": [{"sid", "title", "brand", "price_band"}, ...]}``
for retrieve / filter / bundle and ``{"ranking": [sid, ...]}`` for rank. The final assistant message is
plain text naming the recommended item by SID (and a complementary item when a bundle was asked for).
"""

from __future__ import annotations

import json

from sft_builder.context import BuildContext
from sft_builder.core import Template, dumps_unicode, hash_sample, make_record, pick_template, stable_hash
from sft_builder.split import SESSION, max_event_ts, user_items
from sft_builder.tasks.base import sid_prefix_len, user_targets

NAME = "multi_turn_fulfillment"
LEVEL = "user"

SYSTEM = (
    "You are a shopping assistant. To act on the catalog, reply with one JSON object: "
    '{"action": "retrieve", "query": ...} or {"action": "retrieve", "sid_prefix": ...}, '
    '{"action": "filter", "constraint": {...}}, {"action": "rank", "by": "user_history"}, '
    '{"action": "bundle", "sid": ...}. Tool messages return catalog results. '
    "Finish with a recommendation that names items by their semantic IDs."
)

TEMPLATES = (
    Template("I'm looking for {intent}.{context}"),
    Template("Can you help me find {intent}?{context}"),
    Template("I need {intent} for a project.{context}"),
    Template("Show me some options for {intent}.{context}"),
    Template("What {intent} would you recommend?{context}"),
    Template("I want to buy {intent}. Any suggestions?{context}"),
    Template("Help me pick {intent}, please.{context}"),
    Template("I'm shopping for {intent} today.{context}"),
    Template("Do you have good {intent}?{context}"),
    Template("Find me {intent} that suits me.{context}"),
)
REFINEMENTS = {
    "brand": ("I'd prefer {value}.", "Only {value}, please.", "Can you keep it to the brand {value}?", "Something from {value} would be best."),
    "price_band": ("My budget is {value}.", "Keep it {value}, please.", "Anything priced {value}?", "I want to spend {value}."),
}
BUNDLE_ASKS = ("What goes well with it?", "Anything I should buy together with it?", "Suggest something to go with that.")


def _card(item: dict) -> dict:
    return {"sid": item["sid"], "title": item["title"], "brand": item.get("brand"), "price_band": item.get("price_band")}


def _observation(items: list[dict]) -> str:
    return dumps_unicode({"results": [_card(it) for it in items]})


def _action(**fields) -> str:
    return dumps_unicode(fields)


def session_context(events: list[dict], index: int, window: int) -> list[dict]:
    target = events[index]
    if target.get(SESSION):
        same = [e for e in events[:index] if e.get(SESSION) == target[SESSION]]
        return same[-window:]
    return list(events[max(0, index - window) : index])


def build_dialogue(user_id: str, events: list[dict], index: int, split: str, ctx: BuildContext) -> dict | None:
    cfg, item = ctx.cfg, events[index]
    key = f"{user_id}:{index}"
    h = lambda *parts: stable_hash(NAME, key, ctx.seed, *parts)  # noqa: E731
    exclude = user_items(events) - {item["item_id"]}
    session = session_context(events, index, cfg.session_window)

    by_prefix = not item.get("category") or h("retrieve") % 2 == 1
    pool = ctx.prefix_pool.get(item.get("prefix"), []) if by_prefix else ctx.category_pool.get(item["category"], [])
    others = hash_sample(pool, cfg.dialogue_results - 1, NAME, key, ctx.seed, skip=exclude | {item["item_id"]},
                         key=lambda it: it["item_id"])
    results = list(others)
    results.insert(h("slot") % (len(others) + 1), item)

    intent = f"{item['category'].lower()} products" if item.get("category") else "something like what I bought recently"
    context = (" Earlier I looked at: " + "; ".join(e["title"] for e in session) + ".") if session else ""
    tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
    opening, _ = tpl.render(intent=intent, context=context)
    retrieve = _action(action="retrieve", sid_prefix=item["prefix"]) if by_prefix else _action(action="retrieve", query=item["category"].lower())
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": opening},
        {"role": "assistant", "content": retrieve},
        {"role": "tool", "content": _observation(results)},
    ]
    actions = ["retrieve"]
    shown = list(results)
    attrs = [a for a in ("brand", "price_band") if item.get(a)]
    if attrs:
        attr = attrs[h("attr") % len(attrs)]
        phrases = REFINEMENTS[attr]
        results = [r for r in results if r.get(attr) == item[attr]]
        messages += [
            {"role": "user", "content": phrases[h("refine") % len(phrases)].format(value=item[attr])},
            {"role": "assistant", "content": _action(action="filter", constraint={attr: item[attr]})},
            {"role": "tool", "content": _observation(results)},
        ]
        actions.append("filter")
    ranking = [item] + sorted((r for r in results if r is not item), key=lambda r: -sid_prefix_len(r["sid"], item["sid"]))
    messages += [
        {"role": "assistant", "content": _action(action="rank", by="user_history")},
        {"role": "tool", "content": json.dumps({"ranking": [r["sid"] for r in ranking]})},
    ]
    actions.append("rank")
    final = f"I recommend {item['sid']} ({item['title']})."
    complements = [c for c in (item.get("complements") or []) if c["item_id"] not in exclude][:3]
    if complements:
        messages += [
            {"role": "user", "content": BUNDLE_ASKS[h("bundle") % len(BUNDLE_ASKS)]},
            {"role": "assistant", "content": _action(action="bundle", sid=item["sid"])},
            {"role": "tool", "content": _observation(complements)},
        ]
        actions.append("bundle")
        final += f" It pairs well with {complements[0]['sid']} ({complements[0]['title']})."
        shown += complements
    messages.append({"role": "assistant", "content": final})
    transcript = "\n".join(f"{m['role']}: {m['content']}" for m in messages[1:-1])
    return make_record(
        task=NAME, split=split, key=key, instruction=SYSTEM, input=transcript, output=final, messages=messages,
        mentioned=session + shown, sid_mentions=shown, targets=[item], user_id=user_id,
        metadata={"template": tid, "actions": actions, "session_from": "session_id" if item.get(SESSION) else "window",
                  "max_event_ts": max_event_ts(session + [item])},
    )


def build_user(user_id: str, events: list[dict], ctx: BuildContext) -> list[dict]:
    out = []
    for target in user_targets(NAME, events, ctx):
        record = build_dialogue(user_id, events, target.index, target.split, ctx)
        if record is not None:
            out.append(record)
    return out
