"""Helpers shared by the task modules (each task is one module with NAME, LEVEL, TEMPLATES, build_*)."""

from __future__ import annotations

from sft_builder.context import BuildContext
from sft_builder.split import Target, plan_targets


def user_targets(task: str, events: list[dict], ctx: BuildContext, *, splits=None) -> list[Target]:
    kwargs = {"splits": splits} if splits else {}
    return plan_targets(
        events,
        max_history=ctx.cfg.max_history,
        min_history=ctx.cfg.min_history,
        per_user=ctx.per_user(task),
        eval_per_user=ctx.cfg.eval_targets_per_user,
        **kwargs,
    )


def sid_prefix_len(a: str, b: str) -> int:
    """How many leading SID tokens two SIDs share ("<a_1><b_2>" vs "<a_1><b_3>" -> 1)."""
    ta, tb = a.split(">"), b.split(">")
    n = 0
    for x, y in zip(ta, tb):
        if x != y or not x:
            break
        n += 1
    return n
