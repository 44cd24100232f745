"""Which events of a user are training data and which are held out, and the targets each task predicts.

The Spark job tags every event with its split (window functions over the user's sequence):

* ``leave_one_out`` (the default when the log has no timestamps): the last event of each user is the
  test target, the one before it the validation target, everything earlier is training history;
* ``temporal`` (when it has): one global cutoff pair for the whole log; events before ``valid_start``
  are training, ``[valid_start, test_start)`` validation, the rest test.

Everything below is per user and plain Python. The leakage rule it enforces: a training record of a
user may mention only that user's training events, and never an item the user holds out
(:func:`held_out_items`); evaluation targets are the earliest held-out events of their split.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.sft import TEST, TRAIN, VALIDATION

SPLIT, SEQ, TS, QUERY, SESSION, COMPLEMENTS = "split", "seq", "ts", "query", "session_id", "complements"
LEAVE_ONE_OUT, TEMPORAL = "leave_one_out", "temporal"


def leave_one_out_split(position_from_end: int) -> str:
    """Split of an event by its 1-based position counted from the user's last event."""
    return TEST if position_from_end == 1 else VALIDATION if position_from_end == 2 else TRAIN


def temporal_split(ts: int, valid_start: int, test_start: int) -> str:
    return TRAIN if ts < valid_start else VALIDATION if ts < test_start else TEST


@dataclass(frozen=True)
class Target:
    split: str
    index: int  # position of the target event in the user's sequence
    history: tuple  # the events before it, at most max_history, oldest first

    def key(self, user_id: str) -> str:
        return f"{user_id}:{self.index}"


def held_out_items(events: list[dict]) -> set[str]:
    return {e["item_id"] for e in events if e[SPLIT] != TRAIN}


def train_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e[SPLIT] == TRAIN]


def plan_targets(
    events: list[dict], *, max_history: int, min_history: int, per_user: int, eval_per_user: int, splits=(TRAIN, VALIDATION, TEST)
) -> list[Target]:
    """The targets of one user: the ``per_user`` most recent training events with enough history, and
    the earliest ``eval_per_user`` events of each evaluation split."""
    targets: list[Target] = []
    for split in splits:
        eligible = [i for i, e in enumerate(events) if e[SPLIT] == split and i >= min_history]
        chosen = eligible[-per_user:] if split == TRAIN else eligible[:eval_per_user]
        targets.extend(Target(split, i, tuple(events[max(0, i - max_history) : i])) for i in chosen)
    return targets


def user_items(events: list[dict]) -> set[str]:
    """Items never shown to a user as candidates or catalog results: all of theirs (not new to them, and
    a training record must never reveal a held-out one)."""
    return {e["item_id"] for e in events}


def events_visible_at(events: list[dict], split: str) -> list[dict]:
    """The user's events a record of ``split`` may use as history: training records only training
    events; an evaluation record everything before that split's held-out events."""
    if split == TRAIN:
        return train_events(events)
    stop = next((i for i, e in enumerate(events) if e[SPLIT] == split), len(events))
    return list(events[:stop])


def max_event_ts(events: list[dict]) -> int | None:
    """Latest timestamp (epoch microseconds) among the events a record uses; None without timestamps."""
    stamps = [e.get(TS) for e in events if e.get(TS) is not None]
    return max(stamps) if stamps else None
