"""Collision resolution, rendering, trie and glossary (plain Python)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tokenizer.glossary import aggregates_from_items, build_glossary, describe_sid
from tokenizer.render import TokenFormat
from tokenizer.resolve import ResolutionOverflow, resolve_all, resolve_group, resolve_groups
from tokenizer.trie import allowed_next, build_trie, lookup

K = 4


def frame(codes: dict[str, list[int]], kept: dict[str, list[int]] | None = None) -> pd.DataFrame:
    ids = list(codes)[::-1]  # read order must not matter
    return pd.DataFrame({"item_id": ids, "codes": [codes[i] for i in ids], "kept_sid": [(kept or {}).get(i) for i in ids]})


def costs_prefer(order: dict[str, list[float]]):
    return lambda rows: np.array([order[i] for i in rows["item_id"]])


CODES = {"a": [0, 0, 1], "b": [0, 0, 1], "c": [0, 0, 1], "d": [0, 0, 2], "e": [1, 3, 0]}


def test_disambiguation_appends_ordinal_by_item_id():
    out = resolve_all(frame(CODES), method="disambiguation", levels=3, codebook_size=K)
    sid = dict(zip(out["item_id"], map(list, out["sid"])))
    assert sid == {"a": [0, 0, 1, 0], "b": [0, 0, 1, 1], "c": [0, 0, 1, 2], "d": [0, 0, 2, 0], "e": [1, 3, 0, 0]}
    assert dict(zip(out["item_id"], out["resolution"]))["d"] is None


def test_reassign_moves_colliders_to_free_codes_by_cost():
    costs = {"a": [9, 1, 0, 9], "b": [0, 1, 9, 9], "c": [9, 0.5, 9, 0.1], "e": [0, 0, 0, 0]}
    out = resolve_all(frame(CODES), method="reassign", levels=3, codebook_size=K, last_level_costs=costs_prefer(costs))
    sid = dict(zip(out["item_id"], map(list, out["sid"])))
    # code 2 is d's; a, b, c share code 1 and are spread over free codes {0, 1, 3} at minimum total cost
    assert sid == {"a": [0, 0, 1], "b": [0, 0, 0], "c": [0, 0, 3], "d": [0, 0, 2], "e": [1, 3, 0]}
    res = dict(zip(out["item_id"], out["resolution"]))
    assert res["a"] is None and res["b"] == "reassigned" and res["d"] is None


def test_reassign_falls_back_to_disambiguation_when_group_exceeds_k():
    codes = {f"i{n}": [0, 0, n % 2] for n in range(6)} | {"z": [1, 1, 1]}
    out = resolve_all(frame(codes), method="reassign", levels=3, codebook_size=K, last_level_costs=lambda r: np.zeros((len(r), K)))
    sids = [tuple(s) for s in out["sid"]]
    assert len(set(sids)) == 7 and {len(s) for s in sids} == {4}
    assert dict(zip(out["item_id"], map(list, out["sid"])))["z"] == [1, 1, 1, 0]


def test_hybrid_adds_unique_item_ordinals():
    out = resolve_all(frame(CODES), method="hybrid", levels=3, codebook_size=K, first_ordinal=10)
    assert [list(s) for s in out["sid"]] == [[0, 0, 1, 10], [0, 0, 1, 11], [0, 0, 1, 12], [0, 0, 2, 13], [1, 3, 0, 14]]


@pytest.mark.parametrize("method", ["disambiguation", "reassign"])
def test_frozen_kept_and_retired_sids_never_move_or_get_reused(method):
    length = 4 if method == "disambiguation" else 3
    kept = {"b": [0, 0, 1] + ([0] if length == 4 else [])}
    retired = [[0, 0, 0] + ([1] if length == 4 else [])]
    out = resolve_all(frame(CODES, kept), method=method, levels=3, codebook_size=8, length=length, taken=retired,
                      last_level_costs=lambda r: np.zeros((len(r), 8)))
    sid = dict(zip(out["item_id"], map(tuple, out["sid"])))
    assert sid["b"] == tuple(kept["b"])
    assert tuple(retired[0]) not in sid.values()
    assert len(set(sid.values())) == 5


def test_reassign_overflow_with_fixed_length_is_an_error():
    codes = {f"i{n}": [0, 0, 0] for n in range(6)}
    with pytest.raises(ResolutionOverflow):
        resolve_all(frame(codes), method="reassign", levels=3, codebook_size=K, length=3, last_level_costs=lambda r: np.zeros((len(r), K)))


@pytest.mark.parametrize("method,length", [("reassign", 3), ("reassign", 4), ("disambiguation", 4), ("hybrid", 4)])
def test_many_groups_at_once_match_one_group_at_a_time(method, length):
    """resolve_groups (the Spark job's and resolve_all's path, idle groups vectorised) gives what
    resolve_group gives group by group, with shared codes, kept and taken SIDs in some groups."""
    rng = np.random.default_rng(length)
    k = 6
    costs = {}
    for trial in range(20):
        n = int(rng.integers(1, 60))
        codes = {f"i{trial}-{j:02d}": [int(v) for v in rng.integers(0, [3, 2, k])] for j in range(n)}
        costs.update({i: rng.random(k) for i in codes})
        pad = [0] * (length - 3) if method != "hybrid" else [7] * (length - 3)
        ids = sorted(codes)
        kept = {i: codes[i] + pad for i in ids[:: 9] if sum(c[:2] == codes[i][:2] for c in codes.values()) < k}
        taken = [list(codes[ids[-1]][:2]) + [int(rng.integers(0, k))] + pad] if n > 3 else []
        table = frame(codes, kept)
        settings = dict(method=method, levels=3, codebook_size=k, length=length,
                        last_level_costs=lambda rows: np.array([costs[i] for i in rows["item_id"]]))
        try:
            expected = pd.concat(
                [resolve_group(g, taken=[t for t in taken if t[:2] == list(key)], **settings)
                 for key, g in table.groupby(table["codes"].map(lambda c: tuple(c[:2])))], ignore_index=True
            ).sort_values("item_id", ignore_index=True)
        except ResolutionOverflow:
            with pytest.raises(ResolutionOverflow):
                resolve_groups(table, taken=taken, **settings)
            continue
        got = resolve_groups(table, taken=taken, **settings)
        assert got["item_id"].tolist() == expected["item_id"].tolist()
        assert [list(map(int, s)) for s in got["sid"]] == [list(map(int, s)) for s in expected["sid"]]
        assert got["resolution"].tolist() == expected["resolution"].tolist()


def test_render_parse_and_special_tokens():
    fmt = TokenFormat()
    assert fmt.render([12, 201, 7]) == "<a_12><b_201><c_7>"
    assert fmt.parse("<a_12><b_201><c_7>", length=3) == [12, 201, 7]
    with pytest.raises(ValueError):
        fmt.parse("<a_12><c_7>")
    hyb = TokenFormat(hybrid=True)
    assert hyb.render([1, 2, 3, 40]) == "<a_1><b_2><c_3><item_40>" and hyb.item_token([1, 2, 3, 40]) == "<item_40>"
    assert hyb.parse("<a_1><b_2><c_3><item_40>", length=4) == [1, 2, 3, 40]
    custom = TokenFormat(template="[{level}{code}]", level_names="xyz")
    assert custom.render([1, 2]) == "[x1][y2]"
    assert fmt.special_tokens([2, 3]) == ["<a_0>", "<a_1>", "<b_0>", "<b_1>", "<b_2>"]
    with pytest.raises(ValueError):
        TokenFormat(template="<{level}>")


def test_trie_lookup_and_rejects_duplicates():
    fmt = TokenFormat()
    trie = build_trie([(fmt.render([0, 1]).replace("><", ">|<").split("|"), "x"), (["<a_0>", "<b_2>"], "y")])
    assert allowed_next(trie, []) == ["<a_0>"] and allowed_next(trie, ["<a_0>"]) == ["<b_1>", "<b_2>"]
    assert lookup(trie, ["<a_0>", "<b_2>"]) == "y" and lookup(trie, ["<a_1>", "<b_2>"]) is None
    with pytest.raises(ValueError, match="share the SID"):
        build_trie([(["<a_0>", "<b_1>"], "x"), (["<a_0>", "<b_1>"], "y")])


def test_glossary_names_dominant_category_and_distinctive_terms():
    items = pd.DataFrame({
        "item_id": ["1", "2", "3", "4"],
        "sid": [[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 1]],
        "title": ["Stanley staples heavy", "Arrow staples narrow", "Nitrile gloves large", "Nitrile gloves small"],
        "category_path": [["Ind", "Fasteners"], ["Ind", "Fasteners"], ["Ind", "Safety"], ["Ind", "Lab"]],
    })
    fmt = TokenFormat()
    g = build_glossary(aggregates_from_items(items), render_prefix=fmt.render, top_terms=3)
    a0, a1 = g["prefixes"]["<a_0>"], g["prefixes"]["<a_1>"]
    assert a0["item_count"] == 2 and a0["category_path"] == ["Ind", "Fasteners"] and a0["category_share"] == 1.0
    assert a0["top_terms"] == ["staples"] and set(a1["top_terms"]) == {"gloves", "nitrile"}
    assert a0["example_titles"] == ["Stanley staples heavy", "Arrow staples narrow"]
    assert g["prefixes"]["<a_0><b_1>"]["item_count"] == 1
    assert "Fasteners" in describe_sid(g, [0, 0, 0], render_prefix=fmt.render)
