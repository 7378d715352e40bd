"""The ingress settings and the one resolution of the client's address
(`pooler.web.forwarded`), with hostile forwarded headers: forged hops from an untrusted
peer, more than 32 hops, over-long and garbage values, IPv6, a NUL; the depth rule; and the
allowlist's decision (`pooler.web.ingress_rules`)."""

from __future__ import annotations

import pytest

from pooler.instance_settings import (
    IngressSettings,
    InstanceSettings,
    SettingsError,
    flat_settings,
    is_setting_key,
    parse_settings,
)
from pooler.web.forwarded import MAX_HOPS, client_address, client_rules
from pooler.web.ingress_rules import rules_for

PROXY = "10.0.0.2"
XFF = client_rules(("10.0.0.0/8", "fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # An untrusted peer's header is never read, whatever it claims.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        ("203.0.113.9", ["10.0.0.3"], "203.0.113.9"),
        # Through the proxy: the right-most address that is not a trusted proxy.
        (PROXY, ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        (PROXY, ["198.51.100.1, 10.0.0.7, 10.0.0.8"], "198.51.100.1"),
        # 33+ hops: only the right-most 32 are looked at (all trusted here: the left-most
        # of those is the client, never the forged 33rd).
        (PROXY, [", ".join(["6.6.6.6"] + ["10.0.0.9"] * MAX_HOPS)], "10.0.0.9"),
        (PROXY, ["6.6.6.6"] + ["10.0.0.9"] * MAX_HOPS, "10.0.0.9"),
        (PROXY, [",".join(["7.7.7.7"] * 10_000) + ", 198.51.100.4"], "198.51.100.4"),
        # Over-long, garbage, a port, a NUL, an empty hop: the walk stops at the last
        # address believed (the proxy itself here).
        (PROXY, ["1" * 65], PROXY),
        (PROXY, ["198.51.100.1\x00"], PROXY),
        (PROXY, ["6.6.6.6, \x00, 10.0.0.5"], "10.0.0.5"),
        (PROXY, ["198.51.100.1:443"], PROXY),
        (PROXY, ["[2001:db8::1]"], PROXY),
        (PROXY, ["6.6.6.6,,"], PROXY),
        (PROXY, ["unknown"], PROXY),
        (PROXY, [""], PROXY),
        # IPv6, and an IPv4-mapped IPv6 address read as its IPv4 address.
        (PROXY, ["2001:DB8::0:7"], "2001:db8::7"),
        ("fd00::1", ["2001:db8::7, fd00::2"], "2001:db8::7"),
        ("::ffff:10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        (PROXY, ["::ffff:198.51.100.1"], "198.51.100.1"),
    ],
)
def test_x_forwarded_for_at_depth_zero(peer: str, xff: list[str], expected: str) -> None:
    assert client_address(XFF, peer, xff) == expected


@pytest.mark.parametrize(
    ("n", "xff", "expected"),
    [
        (1, ["198.51.100.1"], PROXY),  # depth 1: the peer itself
        (2, ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # one proxy: what it saw
        (3, ["6.6.6.6, 198.51.100.1, 172.16.0.1"], "198.51.100.1"),  # untrusted hop counted
        (3, ["198.51.100.1"], "198.51.100.1"),  # shorter than the depth: the left-most
        (3, ["garbage, 172.16.0.1"], "172.16.0.1"),  # the walk stops at garbage
        (16, [", ".join(f"198.51.100.{i}" for i in range(40))], "198.51.100.25"),
    ],
)
def test_x_forwarded_for_at_a_depth(n: int, xff: list[str], expected: str) -> None:
    rules = client_rules(("10.0.0.0/8",), "x_forwarded_for", n)
    assert client_address(rules, PROXY, xff) == expected
    assert client_address(rules, "203.0.113.9", xff) == "203.0.113.9"  # untrusted peer


def test_x_real_ip_and_peer_sources() -> None:
    real = client_rules(("10.0.0.0/8",), "x_real_ip")
    assert client_address(real, PROXY, ["6.6.6.6"], "198.51.100.1") == "198.51.100.1"
    assert client_address(real, PROXY, [], " 2001:db8::1 ") == "2001:db8::1"
    assert client_address(real, PROXY, [], None) == PROXY
    assert client_address(real, PROXY, [], "198.51.100.1\x00") == PROXY
    assert client_address(real, PROXY, [], "x" * 70) == PROXY
    assert client_address(real, "203.0.113.9", [], "198.51.100.1") == "203.0.113.9"
    peer = client_rules(("10.0.0.0/8",), "peer")
    assert client_address(peer, PROXY, ["198.51.100.1"], "198.51.100.1") == PROXY


def test_the_allowlist_decides_on_the_resolved_address() -> None:
    settings = parse_settings(
        {
            "trusted_proxies": ["10.0.0.0/8"],
            "ingress": {"allowlist": ["198.51.100.0/24", "2001:db8::/32", "192.0.2.7"]},
        }
    )
    rules = rules_for(settings)
    assert rules_for(settings) is rules  # parsed once per snapshot
    assert rules.allows("198.51.100.9") and rules.allows("2001:db8::5")
    assert rules.allows("192.0.2.7") and not rules.allows("192.0.2.8")
    assert rules.allows("::ffff:198.51.100.9")  # a dual-stack socket's IPv4 client
    for refused in ("203.0.113.9", "", "garbage", "198.51.100.9\x00", "::1", "2001:db9::1"):
        assert not rules.allows(refused), refused
    forged = client_address(rules.client, "203.0.113.9", ["198.51.100.9"])
    assert not rules.allows(forged)  # a forged header from an untrusted peer


def test_ingress_settings_parse_strictly() -> None:
    assert InstanceSettings().ingress == IngressSettings((), "x_forwarded_for", 0)
    parsed = parse_settings(
        {
            "ingress": {
                "allowlist": [" 10.1.2.3 ", "2001:DB8::/32", "192.168.1.7/24"],
                "client_ip_source": "x_real_ip",
                "proxy_depth": 16,
            }
        },
        strict=True,
    )
    assert parsed.ingress.allowlist == ("10.1.2.3/32", "2001:db8::/32", "192.168.1.0/24")
    flat = flat_settings(parsed)
    assert flat["ingress.allowlist"] == ["10.1.2.3/32", "2001:db8::/32", "192.168.1.0/24"]
    assert flat["ingress.client_ip_source"] == "x_real_ip" and flat["ingress.proxy_depth"] == 16
    assert parsed.trusted_proxies == ()  # still its own top-level setting
    for key in ("ingress", "ingress.allowlist", "ingress.client_ip_source", "ingress.proxy_depth"):
        assert is_setting_key(key)
    assert not is_setting_key("ingress.nope")
    refused = [
        ({"allowlist": ["10.0.0.1", "10.0.0.300"]}, "ingress.allowlist: '10.0.0.300'"),
        ({"allowlist": ["10.0.0.1", "example.com"]}, "is not an IP address or CIDR"),
        ({"allowlist": ["1.2.3.4\x00"]}, "is not an IP address or CIDR"),
        ({"allowlist": "10.0.0.0/8"}, "ingress.allowlist must be a list"),
        ({"allowlist": ["10.0.0.1"] * 257}, "ingress.allowlist must be a list of at most 256"),
        ({"client_ip_source": "forwarded"}, "ingress.client_ip_source must be one of"),
        ({"proxy_depth": 17}, "ingress.proxy_depth must be between 0 and 16"),
        ({"proxy_depth": -1}, "ingress.proxy_depth must be between 0 and 16"),
        ({"proxy_depth": "2"}, "ingress.proxy_depth must be a number"),
        ({"nope": 1}, "ingress.nope is not an ingress setting"),
    ]
    for change, named in refused:
        with pytest.raises(SettingsError, match=named.replace("(", r"\(")):
            parse_settings({"ingress": change}, strict=True)
