import pytest

from cwtx._lru import SizedLRU


def test_the_least_recently_used_go_first_once_over_the_limit():
    cache: SizedLRU[str, int] = SizedLRU(10)
    assert cache.put("a", 1, 4) == [] and cache.put("b", 2, 4) == []
    assert cache.get("a") == 1  # now the most recent
    assert cache.put("c", 3, 4) == [("b", 2)]
    assert list(cache) == ["a", "c"] and cache.bytes == 8 and len(cache) == 2
    assert "b" not in cache and cache.get("b") is None


def test_the_entry_put_last_stays_whatever_its_size():
    cache: SizedLRU[str, int] = SizedLRU(0)
    assert cache.put("a", 1, 100) == []
    assert cache.put("b", 2, 1) == [("a", 1)]
    assert list(cache) == ["b"] and cache.bytes == 1


def test_putting_a_key_again_replaces_its_size_and_makes_it_recent():
    cache: SizedLRU[str, int] = SizedLRU(10)
    cache.put("a", 1, 4)
    cache.put("b", 2, 4)
    assert cache.put("a", 9, 2) == [] and cache.bytes == 6
    assert list(cache.items()) == [("b", 2), ("a", 9)]


def test_pop_and_clear_give_back_the_bytes():
    cache: SizedLRU[str, int] = SizedLRU(10)
    cache.put("a", 1, 4)
    cache.put("b", 2, 4)
    assert cache.pop("a") == 1 and cache.pop("a") is None and cache.bytes == 4
    cache.clear()
    assert cache.bytes == 0 and len(cache) == 0


def test_a_negative_limit_is_refused():
    with pytest.raises(ValueError, match="0 or more"):
        SizedLRU(-1)
