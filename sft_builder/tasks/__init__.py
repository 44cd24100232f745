"""The 13 tasks of the corpus, one module each. ``TASKS`` maps task name -> module.

Each module has ``NAME``, ``LEVEL`` and ``TEMPLATES`` (>= 10 paraphrases) and one or more builders:
``build_user(user_id, events, ctx)`` (user-level, over the user's sequence), ``build_item(item, split,
ctx)`` (one catalog item), ``build_query(...)`` (search from derived queries) or ``build_prefix(...)``
(sid_semantics). Builders return SFT_RECORDS rows as dicts; they never touch Spark.
"""

from sft_builder.tasks import (
    bundle,
    constrained_rec,
    diverse_rec,
    item_to_sid,
    listwise_rank,
    multi_turn_fulfillment,
    next_item,
    next_item_from_text,
    preference_summary,
    search,
    sid_semantics,
    sid_to_item,
    trending_rec,
)

TASKS = {
    m.NAME: m
    for m in (
        next_item,
        next_item_from_text,
        sid_to_item,
        item_to_sid,
        search,
        constrained_rec,
        diverse_rec,
        preference_summary,
        bundle,
        sid_semantics,
        listwise_rank,
        multi_turn_fulfillment,
        trending_rec,
    )
}
USER_TASKS = tuple(name for name, m in TASKS.items() if hasattr(m, "build_user"))
ITEM_TASKS = tuple(name for name, m in TASKS.items() if hasattr(m, "build_item"))
