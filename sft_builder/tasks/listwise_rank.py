"""listwise_rank: history + candidate SIDs (the true next item among sampled negatives) -> a ranked list.

Negatives are items the user never interacted with: ``same_prefix_fraction`` of them from the true
item's level-1 SID prefix pool (hard negatives), the rest from the global pool; the candidates are
shown in a hashed order. Only the first position is supervised by the log (the true item); the others
follow by how many leading SID tokens they share with it, then by hash.
"""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.core import Template, hash_order, hash_sample, make_record, pick_template, sid_list
from sft_builder.split import max_event_ts, user_items
from sft_builder.tasks.base import sid_prefix_len, user_targets

NAME = "listwise_rank"
LEVEL = "user"

TEMPLATES = (
    Template("Rank the candidate items by how likely the user is to interact with them next.", "History: {history}\nCandidates: {candidates}"),
    Template("The user's history is {history}. Order these candidates from most to least relevant: {candidates}"),
    Template("Given the user's past items and a set of candidates, return the candidates as a ranked list.", "Past: {history}\nCandidates: {candidates}"),
    Template("Sort the candidate products for this user, best first.", "User history: {history}\nCandidate items: {candidates}"),
    Template("You are a re-ranker. History: {history}. Candidates: {candidates}. Output the ranked semantic IDs."),
    Template("Which of these {k} candidates will the user pick next? Rank all of them.", "History: {history}\nCandidates: {candidates}"),
    Template("Re-rank the retrieved items for the user described by their history.", "{history}\n---\n{candidates}"),
    Template("Order the following items by predicted preference of a user who interacted with {history}.", "{candidates}"),
    Template("Produce a ranking of the candidate semantic IDs for the next interaction.", "History: {history}\nCandidates: {candidates}"),
    Template("Rank these products for the shopper, most likely purchase first. Shopper history: {history}", "{candidates}"),
)


def sample_negatives(target: dict, exclude: set[str], key: str, ctx: BuildContext) -> list[dict]:
    n = ctx.cfg.num_negatives
    n_same = round(n * ctx.cfg.same_prefix_fraction)
    skip = set(exclude) | {target["item_id"]}
    same = hash_sample(ctx.prefix_pool.get(target.get("prefix"), []), n_same, NAME, "prefix", key, ctx.seed, skip=skip,
                       key=lambda it: it["item_id"])
    skip |= {it["item_id"] for it in same}
    rest = hash_sample(ctx.global_pool, n - len(same), NAME, "global", key, ctx.seed, skip=skip, key=lambda it: it["item_id"])
    return same + rest


def build_user(user_id: str, events: list[dict], ctx: BuildContext) -> list[dict]:
    records = []
    exclude = user_items(events)
    for target in user_targets(NAME, events, ctx):
        item, history = events[target.index], list(target.history)
        key = target.key(user_id)
        negatives = sample_negatives(item, exclude, key, ctx)
        if not negatives:
            continue
        shown = hash_order([item] + negatives, NAME, "shown", key, ctx.seed, key=lambda it: it["item_id"])
        shown_at = {it["item_id"]: i for i, it in enumerate(shown)}
        ranked = [item] + sorted(negatives, key=lambda it: (-sid_prefix_len(it["sid"], item["sid"]), shown_at[it["item_id"]]))
        tid, tpl = pick_template(TEMPLATES, f"{NAME}:{key}", ctx.seed)
        instruction, data = tpl.render(history=sid_list(history), candidates=sid_list(shown), k=len(shown))
        records.append(make_record(
            task=NAME, split=target.split, key=key, instruction=instruction, input=data, output=sid_list(ranked),
            mentioned=history + shown, targets=[item], user_id=user_id,
            metadata={"template": tid, "n_candidates": len(shown), "history_length": len(history),
                      "max_event_ts": max_event_ts(history + [item])}))
    return records
