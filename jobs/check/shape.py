"""Levels and codebook size of the run's SIDs: from the codebook artifact, else from config."""

from __future__ import annotations

import json

from jobs.common.stage import StageContext

CODEBOOK_META = "codebook.json"


def codebook_shape(
    ctx: StageContext, observed_levels: int | None = None
) -> tuple[int | None, list[int | None], str]:
    """(L, per-level K, source). ``layout.codebook / codebook.json`` keys ``num_levels`` and
    ``codebook_size`` (an int or one per level) win; then the ``check`` config section, then the
    ``sids`` and ``codebook`` sections; else L is what the data shows and K is unknown (None)."""
    meta_file = ctx.layout.codebook / CODEBOOK_META
    levels = size = None
    source = "config"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        levels = meta.get("num_levels") or meta.get("levels")
        size, source = meta.get("codebook_size"), CODEBOOK_META
    cfg = ctx.config
    size = (
        size
        or cfg.check.codebook_size
        or getattr(cfg.sids, "codebook_size", None)
        or getattr(cfg.codebook, "codebook_size", None)
    )
    levels = (
        levels
        or cfg.check.num_levels
        or getattr(cfg.sids, "num_levels", None)
        or getattr(cfg.codebook, "num_levels", None)
        or getattr(cfg.codebook, "levels", None)
    )
    levels = int(levels) if levels else observed_levels
    if isinstance(size, (list, tuple)):
        sizes: list[int | None] = [int(s) for s in size]
    else:
        sizes = [int(size) if size else None] * (levels or 1)
    if levels and len(sizes) < levels:
        sizes += [sizes[-1]] * (levels - len(sizes))
    return levels, sizes, source if size else "unknown"
