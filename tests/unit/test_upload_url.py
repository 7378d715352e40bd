"""The upload-URL guard: which upload URLs the gateway follows, read the way the connecting
code reads hosts, and the resolution step (a scripted resolver stands in for DNS)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scripted_resolver import scripted_resolver

from pooler.upstream.upload_url import (
    UnsafeUploadUrl,
    is_public_address,
    parse_upload_url,
    resolve_upload_address,
)

UPSTREAM = "http://127.0.0.1:8123"

REFUSED = [
    "https://127.0.0.1/blob",
    "https://127.1/blob",  # inet_aton short forms
    "https://2130706433/blob",
    "https://0x7f000001/blob",
    "https://0177.0.0.1/blob",
    "https://0x7f.1/blob",
    "https://[::1]/blob",
    "https://[::ffff:127.0.0.1]/blob",  # IPv4-mapped IPv6
    "http://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/blob",
    "https://[::127.0.0.1]/blob",  # IPv4-compatible (deprecated)
    "https://[2002:7f00:1::]/blob",  # 6to4 around 127.0.0.1
    "https://[64:ff9b::a9fe:a9fe]/blob",  # NAT64 around 169.254.169.254
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/blob",  # Teredo
    "https://[fe80::1%25eth0]/blob",
    "https://[fc00::1]/blob",
    "https://[ff02::1]/blob",
    "https://[::]/blob",
    "https://localhost/blob",
    "https://LOCALHOST./blob",
    "https://db.localhost/blob",
    "https://0.0.0.0/blob",
    "https://0/blob",
    "https://169.254.169.254/latest/meta-data",
    "https://10.0.0.1/blob",
    "https://172.16.0.1/blob",
    "https://192.168.1.1/blob",
    "https://100.64.0.1/blob",  # shared address space (CGNAT)
    "https://224.0.0.1/blob",
    "https://240.0.0.1/blob",
    "https://255.255.255.255/blob",
    "http://blob.example.com/blob",  # not https
    "https://user:pw@blob.example.com/blob",
    "ftp://blob.example.com/blob",
    "https:///blob",
    "https://blob.example.com:99999/blob",
    "https://[::1/blob",
    "https://bad_host!/blob",
    "https://blob.example.com/a b",
    "https://blob.example.com/caf\u00e9",
    "http://127.0.0.1:8124/blob",  # the upstream's host, another port
    "https://127.0.0.1:8123/blob",  # the upstream's host and port, another scheme
]


@pytest.mark.parametrize("url", REFUSED)
def test_local_private_and_malformed_upload_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUploadUrl):
        parse_upload_url(url, UPSTREAM)


def test_a_public_address_or_a_name_is_followed() -> None:
    checked = parse_upload_url("https://8.8.8.8/c/blob?sig=x&se=1", UPSTREAM)
    assert (checked.host, checked.port, checked.target) == ("8.8.8.8", 443, "/c/blob?sig=x&se=1")
    assert checked.address == ipaddress.ip_address("8.8.8.8") and not checked.own
    named = parse_upload_url("https://acct.blob.core.windows.net:8443/c/b", UPSTREAM)
    assert named.address is None and named.origin == "https://acct.blob.core.windows.net:8443"
    assert named.port == 8443


def test_the_upstreams_own_origin_is_followed() -> None:
    checked = parse_upload_url("http://127.0.0.1:8123/emulator-blob/file_1?sig=ab", UPSTREAM)
    assert checked.own and checked.target == "/emulator-blob/file_1?sig=ab"
    assert parse_upload_url("HTTP://127.0.0.1:8123/x", UPSTREAM + "/").own


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_numeric_form_of_an_ipv4_address_is_judged_as_that_address(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    forms = [str(value), hex(value), str(address)]
    for form in forms:
        url = f"https://{form}/blob"
        if is_public_address(address):
            assert parse_upload_url(url, UPSTREAM).address == address
        else:
            with pytest.raises(UnsafeUploadUrl):
                parse_upload_url(url, UPSTREAM)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_an_ipv4_mapped_address_is_judged_as_the_ipv4_one(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    assert is_public_address(mapped) == is_public_address(v4)


async def test_a_name_is_followed_only_when_every_address_it_resolves_to_is_public() -> None:
    answers = {
        "blob.example.com": ["203.0.113.7", "8.8.4.4"],
        "v6.example.com": ["2606:4700::1111"],
        "rebind.example.com": ["8.8.8.8", "127.0.0.1"],
        "metadata.example.com": ["169.254.169.254"],
        "mapped.example.com": ["::ffff:10.0.0.1"],
    }
    with scripted_resolver(answers) as scripted:
        ok = parse_upload_url("https://blob.example.com/c/b", UPSTREAM)
        # 203.0.113.0/24 is documentation space: not public either.
        with pytest.raises(UnsafeUploadUrl):
            await resolve_upload_address(ok)
        answers["blob.example.com"] = ["8.8.4.4", "1.1.1.1"]
        assert await resolve_upload_address(ok) == "8.8.4.4"  # connect to what was checked
        v6 = parse_upload_url("https://v6.example.com/b", UPSTREAM)
        assert await resolve_upload_address(v6) == "2606:4700::1111"
        for name in ("rebind", "metadata", "mapped", "nowhere"):
            target = parse_upload_url(f"https://{name}.example.com/b", UPSTREAM)
            with pytest.raises(UnsafeUploadUrl):
                await resolve_upload_address(target)
        # Numeric hosts and the upstream's own origin need no lookup.
        asked = len(scripted.asked)
        literal = parse_upload_url("https://8.8.8.8/b", UPSTREAM)
        assert await resolve_upload_address(literal) == "8.8.8.8"
        own = parse_upload_url(f"{UPSTREAM}/emulator-blob/x", UPSTREAM)
        assert await resolve_upload_address(own) == "127.0.0.1"
        assert len(scripted.asked) == asked
