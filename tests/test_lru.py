"""twin.lru: the least recently used entry goes first; a kept value is not built again."""

import pytest

from twin.lru import LRUCache


def test_keeps_the_most_recent_and_builds_only_what_is_missing():
    cache = LRUCache(2)
    built = []

    def make(key):
        def build():
            built.append(key)
            return key.upper()
        return build

    assert cache.get("a", make("a")) == "A"
    assert cache.get("b", make("b")) == "B"
    assert cache.get("a", make("a")) == "A"  # kept: not built again, and now the most recent
    cache.get("c", make("c"))  # evicts b, the least recently used
    assert built == ["a", "b", "c"] and len(cache) == 2
    cache.get("b", make("b"))
    assert built[-1] == "b"
    cache.put("d", "D")
    cache.clear()
    assert len(cache) == 0


def test_rejects_a_cache_without_room():
    with pytest.raises(ValueError, match="at least one"):
        LRUCache(0)
