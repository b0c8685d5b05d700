from napari_sam.lru import LRU


def test_least_recently_used_goes_first_and_reads_refresh():
    cache = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recent
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    calls = []
    assert cache.get_or_compute("d", lambda: calls.append(1) or 4) == 4
    assert cache.get_or_compute("d", lambda: calls.append(1) or 5) == 4 and calls == [1]
    assert len(cache) == 2
