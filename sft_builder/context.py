"""What every record builder may look at besides its own row: config, seed and small lookup tables.

The lookup tables are bounded by the number of groups, not by the log: candidate pools per level-1
SID prefix and per category (``pool_size`` items each), one global pool, trending lists per
category. The Spark job computes them and ships them to its workers inside this object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.sft.config import SftConfig


@dataclass
class BuildContext:
    cfg: SftConfig
    seed: int
    split_mode: str = "leave_one_out"
    has_logged_queries: bool = False
    prefix_pool: dict[str, list[dict]] = field(default_factory=dict)
    category_pool: dict[str, list[dict]] = field(default_factory=dict)
    global_pool: list[dict] = field(default_factory=list)
    # split -> category -> items rising at that split's cutoff (empty without timestamps)
    trending: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    # split -> cutoff timestamp (epoch microseconds) the trending lists were computed at
    trend_cutoffs: dict[str, int] = field(default_factory=dict)

    def per_user(self, task: str) -> int:
        return self.cfg.tasks[task].per_user
