from collections import Counter

from routing.balancer import Balancer, pick_hashed
from tests.routing.fakes import backend


def test_smooth_weighted_round_robin():
    a, b, c = backend("a", weight=5), backend("b", weight=1), backend("c", weight=1)
    balancer = Balancer()
    picks = [balancer.pick("t", [a, b, c]).name for _ in range(7)]
    assert Counter(picks) == {"a": 5, "b": 1, "c": 1}
    assert picks != ["a"] * 5 + ["b", "c"]  # spread out, not bursty
    assert "".join(picks) == "aabacaa"


def test_round_robin_even_weights():
    pool = [backend("a"), backend("b"), backend("c")]
    balancer = Balancer()
    assert [balancer.pick("t", pool).name for _ in range(6)] == list("abcabc")


def test_consistent_hashing_is_sticky_and_moves_only_the_lost_keys():
    pool = [backend(n) for n in "abcd"]
    before = {k: pick_hashed(f"user-{k}", pool).name for k in range(400)}
    again = {k: pick_hashed(f"user-{k}", pool).name for k in range(400)}
    assert before == again
    assert set(before.values()) == set("abcd")
    without_b = [b for b in pool if b.name != "b"]
    after = {k: pick_hashed(f"user-{k}", without_b).name for k in range(400)}
    moved = [k for k in before if before[k] != after[k]]
    assert moved and all(before[k] == "b" for k in moved)


def test_hashing_respects_weights():
    pool = [backend("heavy", weight=9), backend("light", weight=1)]
    counts = Counter(pick_hashed(f"k{i}", pool).name for i in range(2000))
    assert counts["heavy"] > 1500
