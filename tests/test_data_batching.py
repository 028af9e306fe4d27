"""Batch-size rules and system probabilities (spec §1.4)."""

from __future__ import annotations

import numpy as np
import pytest

from lamkit.data import resolve_batch_sizes, system_probabilities
from lamkit.errors import ConfigError


@pytest.mark.parametrize(
    "rule,natoms,expected",
    [
        ("auto", [192, 7], [1, 5]),
        ("auto:32", [192, 7, 10, 8], [1, 5, 4, 4]),
        ("auto:100", [7, 100, 101], [15, 1, 1]),
        ("max:100", [7, 100, 192], [14, 1, 1]),
        ("filter:100", [7, 100], [14, 1]),
        (4, [192, 7], [4, 4]),
        ([2, 3], [192, 7], [2, 3]),
    ],
)
def test_batch_size_rules(rule, natoms, expected):
    assert resolve_batch_sizes(rule, natoms) == expected


def test_batch_size_list_length_mismatch():
    with pytest.raises(ConfigError, match="2 values but there are 3 systems"):
        resolve_batch_sizes([1, 2], [5, 5, 5])


@pytest.mark.parametrize("bad", ["auto:", "auto:x", "max", "mixed:32", "filter:x", "auto:-3", "3"])
def test_batch_size_bad_strings_list_accepted_forms(bad):
    with pytest.raises(ConfigError) as info:
        resolve_batch_sizes(bad, [10])
    assert bad in str(info.value) and '"auto:N"' in str(info.value) and '"max:N"' in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, None, [1, 0]])
def test_batch_size_bad_values(bad):
    with pytest.raises(ConfigError):
        resolve_batch_sizes(bad, [10] * (len(bad) if isinstance(bad, list) else 1))


def test_probabilities_water_sys_size():
    np.testing.assert_allclose(system_probabilities([80, 160, 80]), [0.25, 0.5, 0.25])


def test_probabilities_uniform():
    np.testing.assert_allclose(system_probabilities([80, 160], auto_prob="prob_uniform"), [0.5] * 2)


def test_probabilities_blocks():
    p = system_probabilities([80, 160, 80, 40], auto_prob="prob_sys_size;0:1:0.5;1:3:1.5")
    np.testing.assert_allclose(p, [0.25, 0.75 * 160 / 240, 0.75 * 80 / 240, 0.0])
    assert p.dtype == np.float64 and np.isclose(p.sum(), 1.0)


@pytest.mark.parametrize(
    "bad",
    [
        "prob_sys_size;0:2",
        "prob_sys_size;0:5:1",
        "prob_sys_size;1:1:1",
        "prob_sys_size;0:2:1;1:3:1",
        "prob_sys_size;0:1:-1",
        "prob_sys_size;0:1:0",
        "prob_sys_size;",
        "prob_size",
    ],
)
def test_probabilities_bad_strings(bad):
    with pytest.raises(ConfigError):
        system_probabilities([80, 160, 80], auto_prob=bad)


def test_sys_probs_negative_entries_share_the_rest():
    p = system_probabilities([80, 160, 80], sys_probs=[0.5, -1, -1])
    np.testing.assert_allclose(p, [0.5, 0.5 * 160 / 240, 0.5 * 80 / 240])
    q = system_probabilities([80, 160, 80], sys_probs=[0.2, 0.3, 0.5], auto_prob="prob_uniform")
    np.testing.assert_allclose(q, [0.2, 0.3, 0.5])  # sys_probs wins over auto_prob


@pytest.mark.parametrize(
    "bad,match",
    [
        ([0.6, 0.6, -1], "sum to 1.2 > 1"),
        ([0.5, 0.5], "2 entries but there are 3 systems"),
        ([0.2, 0.2, 0.2], "no negative entry"),
        ([float("nan"), 0.5, 0.5], "finite"),
    ],
)
def test_sys_probs_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        system_probabilities([80, 160, 80], sys_probs=bad)
