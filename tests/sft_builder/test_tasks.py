"""The plain-Python record builders, without Spark."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from jobs.common.config import ConfigError
from jobs.common.pipeline_config import PipelineConfig
from jobs.sft.config import TASK_NAMES, SftConfig
from schemas.sft import ROLES, SFT_RECORDS, TEST, TRAIN, VALIDATION
from sft_builder.build import (
    CONTENT,
    build_glossary_records,
    build_item_records,
    build_query_records,
    build_user_records,
    key_split,
)
from sft_builder.context import BuildContext
from sft_builder.core import pick_template
from sft_builder.split import leave_one_out_split, plan_targets, temporal_split
from sft_builder.tasks import TASKS, listwise_rank, multi_turn_fulfillment, preference_summary, search

CATS = ["Tape", "Glue", "Gloves", "Screws"]


def item(i: int, **extra) -> dict:
    a = i % 4
    return {"item_id": str(i), "sid": f"<a_{a}><b_{i % 7}><c_{i}>", "title": f"Product {i} {CATS[a]}", "brand": f"Brand{i % 3}",
            "category": CATS[a], "category_path": ["Root", CATS[a]], "price_band": "$10-25" if i % 2 else "under $10",
            "prefix": f"<a_{a}>", "description": f"Description of product {i}", **extra}


def events_for(ids: list[int], *, ts: bool = False, queries: bool = False) -> list[dict]:
    n = len(ids)
    out = []
    for seq, i in enumerate(ids):
        out.append({**item(i), "seq": seq, "ts": 1_000_000 * seq if ts else None, "query": f"query {i % 2}" if queries else None,
                    "session_id": None, "split": leave_one_out_split(n - seq),
                    "complements": [{**item(i + 100), "count": 3}]})
    return out


def context(**cfg) -> BuildContext:
    pool = [item(i) for i in range(200, 260)]
    prefix_pool: dict[str, list] = {}
    category_pool: dict[str, list] = {}
    for it in pool:
        prefix_pool.setdefault(it["prefix"], []).append(it)
        category_pool.setdefault(it["category"], []).append(it)
    return BuildContext(cfg=SftConfig(**cfg), seed=17, prefix_pool=prefix_pool, category_pool=category_pool, global_pool=pool,
                        trending={TRAIN: {c: [item(300 + k)] for k, c in enumerate(CATS)}, TEST: {c: [item(400 + k)] for k, c in enumerate(CATS)}},
                        trend_cutoffs={TRAIN: 10**12, TEST: 10**13}, has_logged_queries=True)


def all_records() -> list[dict]:
    ctx = context()
    recs = []
    for u in range(20):
        ids = [u * 10 + k for k in range(3 + u % 6)]
        recs += build_user_records(f"u{u}", events_for(ids, ts=True, queries=True), ctx, TASK_NAMES)
    for i in range(40):
        recs += build_item_records({**item(i), "complements": [{**item(i + 1), "count": 2}]}, ctx, TASK_NAMES)
    recs += build_query_records("brand1 tape", [item(1), item(5)], 0, ctx)
    recs += build_glossary_records({"prefixes": {"<a_1>": {"level": 1, "item_count": 4, "category_path": ["Glue"], "top_terms": ["glue"],
                                                             "example_titles": ["x"]}}}, ctx)
    return recs


def test_every_task_has_ten_templates_and_produces_valid_records():
    records = all_records()
    by_task = Counter(r["task"] for r in records)
    assert set(by_task) == set(TASK_NAMES), set(TASK_NAMES) - set(by_task)
    for name, module in TASKS.items():
        assert len(module.TEMPLATES) >= 10, name
    for r in records:
        assert set(r) == set(SFT_RECORDS.names) | {CONTENT}
        assert r["messages"] and all(m["content"] and m["role"] in ROLES for m in r["messages"])
        assert r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"] == r["output"]
        text = " ".join(m["content"] for m in r["messages"])
        for sid in r["sids"]:
            assert sid in text, (r["task"], sid)
        json.loads(r["metadata"])


def test_template_choice_is_a_function_of_key_and_seed():
    templates = TASKS["next_item"].TEMPLATES
    chosen = [pick_template(templates, f"k{i}", 17)[0] for i in range(500)]
    assert chosen == [pick_template(templates, f"k{i}", 17)[0] for i in range(500)]
    assert set(chosen) == set(range(len(templates)))  # every paraphrase gets used
    assert chosen != [pick_template(templates, f"k{i}", 18)[0] for i in range(500)]


def test_leave_one_out_targets_and_no_held_out_item_in_training_records():
    events = events_for([1, 2, 3, 4, 5, 6])
    assert [e["split"] for e in events] == [TRAIN] * 4 + [VALIDATION, TEST]
    targets = plan_targets(events, max_history=3, min_history=1, per_user=2, eval_per_user=1)
    assert [(t.split, t.index) for t in targets] == [(TRAIN, 2), (TRAIN, 3), (VALIDATION, 4), (TEST, 5)]
    assert [e["item_id"] for e in targets[-1].history] == ["3", "4", "5"]
    held = {"5", "6"}
    for r in build_user_records("u", events, context(), TASK_NAMES):
        if r["split"] == TRAIN:
            assert not held & set(r["item_ids"]), r["task"]


def test_temporal_split_boundaries():
    assert [temporal_split(t, 10, 20) for t in (9, 10, 19, 20)] == [TRAIN, VALIDATION, VALIDATION, TEST]


def test_listwise_negatives_are_new_to_the_user_and_partly_same_prefix():
    events = events_for([200, 204, 208, 212, 216])  # ids inside the pools: must never come back as negatives
    ctx = context(num_negatives=8, same_prefix_fraction=0.5)
    target = events[-1]
    negatives = listwise_rank.sample_negatives(target, {e["item_id"] for e in events}, "k", ctx)
    assert len(negatives) == 8
    assert not {n["item_id"] for n in negatives} & {e["item_id"] for e in events}
    assert sum(n["prefix"] == target["prefix"] for n in negatives) >= 4
    rec = listwise_rank.build_user("u", events, ctx)[-1]
    assert rec["output"].split(", ")[0] == target["sid"] and len(rec["output"].split(", ")) == 9


def test_multi_turn_dialogue_follows_the_action_protocol():
    events = events_for([1, 2, 3, 4, 5])
    rec = multi_turn_fulfillment.build_dialogue("u", events, 4, TEST, context())
    roles = [m["role"] for m in rec["messages"]]
    assert roles[:4] == ["system", "user", "assistant", "tool"] and roles[-1] == "assistant"
    actions = [json.loads(m["content"])["action"] for m in rec["messages"][1:-1] if m["role"] == "assistant"]
    assert actions[0] == "retrieve" and "rank" in actions and "bundle" in actions
    first_results = json.loads(rec["messages"][3]["content"])["results"]
    assert events[4]["sid"] in [r["sid"] for r in first_results]
    assert events[4]["sid"] in rec["output"]
    for word in ("retrieve", "filter", "rank", "bundle", "sid_prefix", "observation", "results"):
        assert word in multi_turn_fulfillment.__doc__.lower()


def test_preference_summary_counts_the_history():
    history = [item(1), item(5), item(2)]  # Glue, Glue, Gloves
    summary = preference_summary.summarize(history)
    assert summary["top_categories"][0] == {"name": "Glue", "count": 2}
    assert summary["n_items"] == 3


def test_derived_query_shapes_and_fallbacks():
    it = {"brand": "Acme", "category": "Duct Tape"}
    assert search.derived_query(it, "waterproof", 0) == "acme duct tape"
    assert search.derived_query(it, "waterproof", 1) == "waterproof duct tape"
    assert search.derived_query(it, None, 1) == "acme duct tape"  # no term: next shape
    assert search.derived_query({"brand": None, "category": None}, None, 0) is None


def test_key_split_fractions():
    splits = Counter(key_split(str(i), 0.1) for i in range(20_000))
    assert abs(splits[TEST] / 20_000 - 0.1) < 0.01 and abs(splits[VALIDATION] / 20_000 - 0.1) < 0.01


def test_config_validation():
    cfg = PipelineConfig.load(overrides={"sft": {"tasks": {"bundle": {"weight": 0.5}}}}).sft
    assert cfg.tasks["bundle"].weight == 0.5 and cfg.tasks["next_item"].per_user == 5
    with pytest.raises(ConfigError, match="unknown task"):
        PipelineConfig.load(overrides={"sft": {"tasks": {"nxt_item": {}}}})
    with pytest.raises(ConfigError):
        PipelineConfig.load(overrides={"sft": {"max_histroy": 3}})
