"""pooler.store.text: what reaches a row is storable; names with control characters are
refused; lookups by an impossible name match nothing."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pooler.store.common import InvalidInputError, check_printable
from pooler.store.text import findable, storable, storable_json, unprintable


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_storable_text_is_printable_encodable_and_bounded(text: str, limit: int) -> None:
    stored = storable(text, limit)
    assert stored is not None
    assert len(stored) <= limit
    assert "\x00" not in stored and encodable(stored)
    assert not unprintable(stored)
    assert storable(stored, limit) == stored  # idempotent


@given(st.text().filter(lambda t: t.isprintable()))
def test_printable_short_text_is_kept_as_it_is(text: str) -> None:
    assert storable(text, len(text) + 1) == text


def test_unprintable_characters_are_escaped_visibly() -> None:
    assert storable("x\x00") == "x\\x00"
    assert storable("bad\x1b[31m") == "bad\\x1b[31m"
    assert storable("a\u202eb\ud800") == "a\\u202eb\\ud800"
    assert storable("emoji 👩‍💻 ok") == "emoji 👩‍💻 ok"  # joiners stay
    assert storable("x" * 500, 200) == "x" * 200
    assert storable(None) is None


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=30,
    )
)
def test_storable_json_has_no_nul_surrogate_or_nan(value: object) -> None:
    stored = storable_json(value)
    text = json.dumps(stored, allow_nan=False, ensure_ascii=False)  # raises on NaN
    assert "\\u0000" not in text and encodable(text)


def test_storable_json_bounds_depth_and_floats() -> None:
    deep: object = "leaf"
    for _ in range(100):
        deep = [deep]
    assert json.dumps(storable_json(deep)).count("[") <= 33
    assert storable_json({"a\x00": math.nan, "b": [math.inf, 1.5]}) == {
        "a\\x00": None,
        "b": [None, 1.5],
    }


@pytest.mark.parametrize("name", ["bad\x1b[31m", "a\x00b", "tab\there", "new\nline", "rtl\u202e"])
def test_names_with_control_characters_are_refused_in_one_line(name: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_printable(name, "a pool name")
    message = caught.value.message
    assert message.startswith("a pool name cannot contain") and message.isprintable()


@pytest.mark.parametrize("name", ["team", "Équipe 1", "東京", "dev 👩‍💻"])
def test_ordinary_names_pass(name: str) -> None:
    assert check_printable(name, "a pool name") == name


def test_findable() -> None:
    assert findable("team") and findable("東京") and findable("bad\x1b")
    assert not findable("a\x00") and not findable("a\udcff")
