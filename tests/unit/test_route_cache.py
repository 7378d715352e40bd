"""The static-route cache in front of werkzeug's matcher: the same answers, no reference
cycle per request, bounded."""

from __future__ import annotations

import gc

import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from pooler.web.route_cache import MAX_ENTRIES, StaticRouteCache, cache_static_routes


def url_map() -> Map:
    routes = Map(merge_slashes=False)
    cache_static_routes(routes)
    routes.add(Rule("/v1/responses", endpoint="responses", methods=["POST"]))
    routes.add(Rule("/v1/files/<path:file_path>", endpoint="file", methods=["GET"]))
    routes.add(Rule("/healthz", endpoint="healthz", methods=["GET"]))
    return routes


def test_answers_are_werkzeugs() -> None:
    adapter = url_map().bind("pooler")
    for _ in range(3):  # the first answer and the cached ones
        assert adapter.match("/v1/responses", "POST") == ("responses", {})
        assert adapter.match("/v1/files/a/b", "GET") == ("file", {"file_path": "a/b"})
        assert adapter.match("/v1/files/c", "GET") == ("file", {"file_path": "c"})
        with pytest.raises(MethodNotAllowed):
            adapter.match("/v1/responses", "GET")
        with pytest.raises(NotFound):
            adapter.match("/v1/nowhere", "POST")


def test_a_cached_match_makes_no_reference_cycle() -> None:
    adapter = url_map().bind("pooler")
    adapter.match("/v1/responses", "POST")
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(1000):
            adapter.match("/v1/responses", "POST")
        assert gc.get_count()[0] - before < 50  # werkzeug's own matcher: ~8 per match
    finally:
        gc.enable()


def test_only_static_rules_are_kept_and_never_more_than_the_bound() -> None:
    routes = url_map()
    cache = routes._matcher
    assert isinstance(cache, StaticRouteCache)
    adapter = routes.bind("pooler")
    for i in range(50):
        adapter.match(f"/v1/files/{i}", "GET")
    assert len(cache._static) == 0
    adapter.match("/v1/responses", "POST")
    assert len(cache._static) == 1
    junk = Rule("/junk", endpoint="junk")
    cache._static.update({("", f"/x{i}", "GET", False): junk for i in range(MAX_ENTRIES - 1)})
    assert adapter.match("/healthz", "GET") == ("healthz", {})  # still answered, not kept
    assert len(cache._static) == MAX_ENTRIES
