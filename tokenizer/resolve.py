"""Collision resolution: turn raw codes into fixed-length, injective semantic IDs.

Three methods, all deterministic (ties and ordinals by ``item_id``, never by read order):

* ``disambiguation`` (TIGER): append one level to every SID, the item's ordinal among the items
  sharing its raw code (sorted by item_id), skipping values already taken.
* ``reassign``: inside each prefix group (the first L-1 levels), items that share a full code are
  moved to free last-level codes by an optimal assignment (scipy ``linear_sum_assignment`` on the
  last-level quantization cost). Only when a prefix group holds more than K items is a
  disambiguation level needed; SIDs then get one extra level everywhere, so the length stays fixed.
* ``hybrid`` (SIGMA): the raw codes plus a unique item token (ordinal), exported as a mapping.

Frozen-codebook reruns pass ``kept_sid`` (unchanged items keep their previous SID exactly) and the
SIDs already ``taken`` (kept and retired ones); new items are placed around them, never moving them.
The group function works on one prefix group as a pandas frame, so Spark runs it per group with
``applyInPandas`` and a plain-Python caller can run it on a whole table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

METHODS = ("disambiguation", "reassign", "hybrid")

UNTOUCHED = None
RESOLUTION_KEPT = "kept"  # unchanged item, previous SID carried over
RESOLUTION_DISAMBIGUATED = "disambiguation"
RESOLUTION_REASSIGNED = "reassigned"
RESOLUTION_HYBRID = "hybrid_item_token"


class ResolutionOverflow(RuntimeError):
    """A prefix group needs more last-level codes than exist and the SID length cannot grow."""


def sid_length(method: str, levels: int, *, overflow: bool) -> int:
    """Fixed SID length for a method (``overflow``: some prefix group holds more than K items)."""
    if method == "reassign":
        return levels + (1 if overflow else 0)
    if method in ("disambiguation", "hybrid"):
        return levels + 1
    raise ValueError(f"unknown resolution method {method!r}; choose one of {METHODS}")


def resolve_group(
    frame: pd.DataFrame,
    *,
    method: str,
    levels: int,
    codebook_size: int,
    length: int,
    taken: Sequence[Sequence[int]] = (),
    last_level_costs: Callable[[pd.DataFrame], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Resolve one prefix group.

    ``frame`` columns: ``item_id``, ``codes`` (list of L ints), optional ``kept_sid`` (list or None).
    ``taken``: SIDs (of length ``length``) unavailable to new items (retired ones; kept SIDs are
    taken automatically). ``last_level_costs(rows) -> (len(rows), K)`` is needed by ``reassign``.
    Returns ``item_id``, ``sid`` (list of ``length`` ints), ``resolution`` (str or None).
    For ``hybrid`` the last SID entry is left as -1: the caller fills in the global item ordinal.
    """
    frame = frame.sort_values("item_id", kind="stable").reset_index(drop=True)
    kept = frame["kept_sid"] if "kept_sid" in frame else pd.Series([None] * len(frame))
    occupied = {tuple(int(v) for v in s) for s in taken}
    sids: list[list[int] | None] = [None] * len(frame)
    resolution: list[str | None] = [UNTOUCHED] * len(frame)
    for i, s in enumerate(kept):
        if s is not None and not (isinstance(s, float) and np.isnan(s)):
            sid = [int(v) for v in s]
            if len(sid) != length:
                raise ResolutionOverflow(f"kept SID of item {frame.at[i, 'item_id']} has length {len(sid)}, expected {length}")
            sids[i] = sid
            resolution[i] = RESOLUTION_KEPT
            occupied.add(tuple(sid))
    free = [i for i in range(len(frame)) if sids[i] is None]
    codes = {i: [int(v) for v in frame.at[i, "codes"]] for i in free}

    if method == "hybrid":
        for i in free:
            sids[i] = codes[i] + [-1]
            resolution[i] = RESOLUTION_HYBRID
    elif method == "disambiguation" or (method == "reassign" and length > levels and _overflows(frame, free, occupied, codebook_size, levels)):
        _disambiguate(free, codes, sids, resolution, occupied, length, levels)
    elif method == "reassign":
        _reassign(frame, free, codes, sids, resolution, occupied, length, levels, codebook_size, last_level_costs)
    else:
        raise ValueError(f"unknown resolution method {method!r}; choose one of {METHODS}")
    return pd.DataFrame({"item_id": frame["item_id"], "sid": sids, "resolution": resolution})


def _overflows(frame, free, occupied, k, levels) -> bool:
    """More items (new + occupied) in this prefix group than last-level codes."""
    return len(free) + len({s[:levels] for s in occupied}) > k


def _disambiguate(free, codes, sids, resolution, occupied, length, levels) -> None:
    pad = [0] * (length - levels - 1)  # reassign with an extra level: that level is the ordinal
    seen: dict[tuple[int, ...], int] = {}
    for i in free:  # free is in item_id order
        base = tuple(codes[i])
        d = seen.get(base, 0)
        while base + tuple(pad) + (d,) in occupied:
            d += 1
        sid = list(base) + pad + [d]
        seen[base] = d + 1
        occupied.add(tuple(sid))
        sids[i] = sid
        # an item alone on its raw code, with ordinal 0, was not changed in any way that matters
        resolution[i] = RESOLUTION_DISAMBIGUATED if d > 0 or _shares(base, codes, i) else UNTOUCHED


def _shares(base, codes, i) -> bool:
    return any(j != i and tuple(c) == base for j, c in codes.items())


def _reassign(frame, free, codes, sids, resolution, occupied, length, levels, k, last_level_costs) -> None:
    pad = [0] * (length - levels)
    buckets: dict[tuple[int, ...], list[int]] = {}
    for i in free:
        buckets.setdefault(tuple(codes[i]), []).append(i)
    pool = [i for b, members in buckets.items() for i in members if len(members) > 1 or b + tuple(pad) in occupied]
    pool.sort()
    settled = [i for i in free if i not in set(pool)]
    used_last = {s[levels - 1] for s in occupied} | {codes[i][levels - 1] for i in settled}
    for i in settled:
        sids[i] = codes[i] + pad
    if not pool:
        return
    free_codes = np.array([c for c in range(k) if c not in used_last], dtype=np.int64)
    if len(free_codes) < len(pool):
        raise ResolutionOverflow(
            f"prefix group {codes[pool[0]][: levels - 1]} needs {len(pool)} free last-level codes but has {len(free_codes)}"
        )
    if last_level_costs is None:
        raise ValueError("reassign needs last_level_costs")
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(last_level_costs(frame.iloc[pool]), dtype=np.float64)[:, free_codes]
    rows, cols = linear_sum_assignment(cost)
    for r, c in zip(rows, cols):
        i = pool[r]
        new_last = int(free_codes[c])
        sids[i] = codes[i][: levels - 1] + [new_last] + pad
        resolution[i] = UNTOUCHED if new_last == codes[i][levels - 1] else RESOLUTION_REASSIGNED


def resolve_groups(
    frame: pd.DataFrame,
    *,
    method: str,
    levels: int,
    codebook_size: int,
    length: int,
    taken: Sequence[Sequence[int]] = (),
    last_level_costs: Callable[[pd.DataFrame], np.ndarray] | None = None,
) -> pd.DataFrame:
    """:func:`resolve_group` on every prefix group in ``frame`` (rows of any number of groups), in
    item_id order. A group with nothing to resolve (no kept SID, no SID taken under its prefix, no
    full code shared) keeps its raw codes, padded to ``length`` as :func:`resolve_group` pads them,
    in one vectorised step: most groups of a large catalog are such, and the per-group call would
    cost more than everything else.
    """
    if len(frame) == 0:
        # object dtype: an empty list column must not be inferred as float64 (Arrow cannot make list<int> of it)
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in ("item_id", "sid", "resolution")})
    frame = frame.sort_values("item_id", kind="stable").reset_index(drop=True)
    codes = np.stack([np.asarray(c, dtype=np.int64) for c in frame["codes"]])
    kept_sids = frame["kept_sid"] if "kept_sid" in frame else pd.Series([None] * len(frame))
    kept = kept_sids.notna().to_numpy()
    # a kept item belongs to its kept SID's group (the same as its raw prefix unless its vector moved)
    prefix = [tuple(int(v) for v in s[: levels - 1]) if k else tuple(c)
              for s, k, c in zip(kept_sids, kept, codes[:, : levels - 1].tolist())]
    taken_by_prefix: dict[tuple[int, ...], list] = {}
    for s in taken:
        taken_by_prefix.setdefault(tuple(int(v) for v in s[: levels - 1]), []).append(s)
    shared = pd.DataFrame(codes).duplicated(keep=False).to_numpy()
    busy_prefixes = {p for p, b in zip(prefix, shared | kept) if b} | set(taken_by_prefix)
    busy = np.fromiter((p in busy_prefixes for p in prefix), dtype=bool, count=len(prefix))

    idle = codes[~busy]
    if method == "hybrid":
        tail, resolution = np.full((len(idle), length - levels), -1), RESOLUTION_HYBRID
    else:
        tail, resolution = np.zeros((len(idle), length - levels), dtype=np.int64), UNTOUCHED
    parts = [pd.DataFrame({"item_id": frame["item_id"][~busy].to_numpy(),
                           "sid": np.concatenate([idle, tail], axis=1).tolist(),
                           "resolution": [resolution] * len(idle)})]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in np.flatnonzero(busy):
        groups.setdefault(prefix[i], []).append(int(i))
    for key in sorted(groups):
        parts.append(resolve_group(frame.iloc[groups[key]], method=method, levels=levels, codebook_size=codebook_size,
                                   length=length, taken=taken_by_prefix.get(key, ()), last_level_costs=last_level_costs))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values("item_id", kind="stable", ignore_index=True)


def resolve_all(
    frame: pd.DataFrame,
    *,
    method: str,
    levels: int,
    codebook_size: int,
    length: int | None = None,
    taken: Sequence[Sequence[int]] = (),
    last_level_costs: Callable[[pd.DataFrame], np.ndarray] | None = None,
    first_ordinal: int = 0,
) -> pd.DataFrame:
    """Plain-Python resolution of a whole table (what the Spark job does per group of prefixes)."""
    if length is None:
        prefix = frame["codes"].map(lambda c: tuple(int(v) for v in c[: levels - 1]))
        overflow = bool(prefix.value_counts().max() > codebook_size) if len(frame) else False
        length = sid_length(method, levels, overflow=overflow)
    out = resolve_groups(frame, method=method, levels=levels, codebook_size=codebook_size, length=length,
                         taken=taken, last_level_costs=last_level_costs)
    if method == "hybrid":
        out = assign_item_ordinals(out, first_ordinal=first_ordinal)
    return out


def assign_item_ordinals(resolved: pd.DataFrame, *, first_ordinal: int = 0) -> pd.DataFrame:
    """Fill the hybrid item ordinal (last SID entry, -1) of new items in item_id order."""
    resolved = resolved.sort_values("item_id", kind="stable").reset_index(drop=True)
    nxt = first_ordinal
    sids = []
    for s in resolved["sid"]:
        s = list(s)
        if s[-1] == -1:
            s[-1] = nxt
            nxt += 1
        sids.append(s)
    resolved["sid"] = sids
    return resolved
