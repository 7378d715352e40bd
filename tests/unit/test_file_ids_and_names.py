"""The checks on client-supplied file ids and `/v1/files` names (pure)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pooler.errors import BadRequest
from pooler.protocol.file_ids import MAX_FILE_ID, check_file_id, is_file_id
from pooler.web.openai_v1.file_form import MAX_FILENAME, check_filename

BACKEND_IDS = ["file-AbC123xyz", "file_00000000a1b2c3d4e5f6", "file_" + "0" * 32, "f", "a-b_c"]
HOSTILE_IDS = [
    "",
    "..",
    ".",
    "x?purpose=evil&a=",
    "x#y",
    "x/y",
    "x%2Fy",
    "a b",
    "é",
    "x\x00",
    "file-\n",
    "f" * (MAX_FILE_ID + 1),
    "file-1.txt",
]


@pytest.mark.parametrize("file_id", BACKEND_IDS)
def test_every_shape_the_backend_mints_is_an_id(file_id: str) -> None:
    assert check_file_id(file_id) == file_id


@pytest.mark.parametrize("file_id", HOSTILE_IDS)
def test_anything_that_means_something_in_a_url_is_refused_naming_the_param(file_id: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check_file_id(file_id, "after")
    assert refused.value.param == "after" and refused.value.code == "invalid_file_id"
    assert file_id not in refused.value.message or not file_id


@given(st.text(alphabet=string.printable + "é\x00", max_size=250))
def test_an_id_is_safe_in_a_request_target(value: str) -> None:
    if is_file_id(value):
        assert set(value) <= set(string.ascii_letters + string.digits + "-_")


def test_a_name_loses_its_directories_and_keeps_its_letters() -> None:
    assert check_filename("C:\\Users\\me\\résumé (1).pdf") == "résumé (1).pdf"
    assert check_filename("../../etc/passwd") == "passwd"
    assert check_filename("emoji 👩‍💻.txt") == "emoji 👩‍💻.txt"  # a zero-width joiner is fine


@pytest.mark.parametrize(
    "name",
    [
        "a\x00b",
        "a\x1b[31m",
        "a\x7f",
        "a\x85b",
        "\u202etxt.exe",
        "a\u2066b",
        "a\ud800",
        "",
        "  ",
        "/",
        "x" * (MAX_FILENAME + 1),
    ],
)
def test_names_the_database_or_a_terminal_would_mangle_are_refused(name: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check_filename(name)
    assert refused.value.param == "file"
