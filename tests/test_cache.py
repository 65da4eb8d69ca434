"""The project's Redis cache backend (billing_site.cache) against the real Redis."""

import threading
import uuid

from django.core.cache import cache


def test_the_cache_reuses_one_client_and_behaves_like_djangos():
    key = f"test-cache-{uuid.uuid4()}"
    assert cache._cache.get_client(key, write=True) is cache._cache.get_client(key)
    assert cache.add(key, 1, timeout=30) is True
    assert cache.add(key, 2, timeout=30) is False  # SET NX: the first value stays
    assert cache.get(key) == 1
    cache.delete(key)
    assert cache.get(key) is None


def test_the_shared_client_serves_threads():
    keys = [f"test-cache-{uuid.uuid4()}" for _ in range(8)]
    added = []

    def work(key):
        added.append(cache.add(key, key, timeout=30) and cache.get(key) == key)
        cache.delete(key)

    threads = [threading.Thread(target=work, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert added == [True] * len(keys)
