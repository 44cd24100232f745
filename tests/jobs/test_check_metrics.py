"""SID quality metrics on inputs whose answer is known by hand (no Spark)."""

import math

import pytest

from jobs.check import metrics as M


def test_perplexity_is_the_number_of_codes_when_usage_is_uniform_and_one_when_collapsed():
    assert M.perplexity([5, 5, 5, 5]) == pytest.approx(4.0)
    assert M.perplexity([20, 0, 0, 0]) == pytest.approx(1.0)
    # counts 3,3,2 over 8 items: H = -(2 * 3/8 ln 3/8 + 2/8 ln 2/8)
    assert M.perplexity([3, 3, 2]) == pytest.approx(
        math.exp(-(0.75 * math.log(0.375) + 0.25 * math.log(0.25)))
    )


def test_gini_counts_unused_codes_as_zeros():
    assert M.gini([2, 2, 2, 2], 4) == pytest.approx(0.0)
    # one code of four takes everything: (n-1)/n
    assert M.gini([8], 4) == pytest.approx(0.75)
    # sorted [0, 2, 3, 3]: 2 * (1*0 + 2*2 + 3*3 + 4*3) / (4 * 8) - 5/4 = 0.3125
    assert M.gini([3, 3, 2], 4) == pytest.approx(0.3125)


def test_nmi_is_one_for_aligned_zero_for_independent_and_known_in_between():
    assert M.normalized_mutual_information([0, 0, 1, 1], ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert M.normalized_mutual_information([0, 0, 1, 1], ["a", "b", "a", "b"]) == pytest.approx(0.0)
    # H(a) = ln 2, H(b) = -(3/4 ln 3/4 + 1/4 ln 1/4), H(ab) = -(1/2 ln 1/2 + 2 * 1/4 ln 1/4)
    h_a = math.log(2)
    h_b = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h_ab = -(0.5 * math.log(0.5) + 0.5 * math.log(0.25))
    expected = (h_a + h_b - h_ab) / ((h_a + h_b) / 2)
    assert M.normalized_mutual_information([0, 0, 1, 1], ["a", "a", "a", "b"]) == pytest.approx(expected)
    assert 0.3 < expected < 0.4


def test_category_information_ceiling_and_share_do_not_depend_on_code_count():
    categories = ["a"] * 8 + ["b"] * 8
    # 16 pure codes (one item each) and 2 pure codes: both carry all of the category's information,
    # but the 16-code labeling's NMI is capped by its larger entropy.
    many = M.labels_information(list(range(16)), categories)
    few = M.labels_information([0] * 8 + [1] * 8, categories)
    assert many["info_share"] == pytest.approx(1.0) and few["info_share"] == pytest.approx(1.0)
    assert few["nmi"] == pytest.approx(1.0)
    # H(code) = ln 16, H(category) = ln 2: ceiling 2 ln 2 / (ln 16 + ln 2) = 0.4
    assert many["nmi"] == pytest.approx(0.4) and many["nmi_ceiling"] == pytest.approx(0.4)
    # codes blind to the category: no information, ceiling unchanged
    blind = M.labels_information([i % 4 for i in range(16)], categories)
    assert blind["info_share"] == pytest.approx(0.0, abs=1e-12) and blind["nmi"] == pytest.approx(0.0, abs=1e-12)


def test_bucket_metrics_from_a_histogram():
    # buckets of sizes 1, 1, 1, 2, 3 (8 items, 5 distinct keys)
    m = M.bucket_metrics({1: 3, 2: 1, 3: 1})
    assert m["items"] == 8 and m["distinct"] == 5
    assert m["colliding_items"] == 5
    assert m["collision_rate"] == pytest.approx(5 / 8)
    assert m["duplicate_rate"] == pytest.approx(3 / 8)
    assert m["largest_bucket"] == 3 and m["largest_bucket_share"] == pytest.approx(3 / 8)
    assert M.bucket_metrics({1: 10})["collision_rate"] == 0.0


def test_level_usage_and_random_baseline():
    usage = M.level_usage_metrics({0: 3, 1: 3, 2: 2}, 4)
    assert (usage["used_codes"], usage["dead_codes"], usage["utilisation"]) == (3, 1, 0.75)
    # P(another item shares my code) = sum c(c-1) / n(n-1) = (6 + 6 + 2) / 56
    assert M.same_code_baseline({0: 3, 1: 3, 2: 2}) == pytest.approx(14 / 56)
