"""TOTP codes within one step of drift, recovery codes, the QR code."""

from __future__ import annotations

import pyotp

from pooler import totp

NOW = 1_800_000_015.0  # in the middle of a 30 s step


def test_a_code_matches_its_step_within_one_step_of_drift() -> None:
    secret = totp.new_secret()
    step = int(NOW // 30)
    codes = pyotp.TOTP(secret)
    for offset in (-1, 0, 1):
        code = codes.at(NOW + 30 * offset)
        assert totp.matching_step(secret, code, NOW) == step + offset
        assert totp.matching_step(secret, f" {code[:3]} {code[3:]} ", NOW) == step + offset
    for offset in (-2, 2):
        assert totp.matching_step(secret, codes.at(NOW + 30 * offset), NOW) is None
    for bad in ("", "12345", "1234567", "abcdef"):
        assert totp.matching_step(secret, bad, NOW) is None


def test_secrets_and_recovery_codes_are_fresh() -> None:
    assert len(totp.new_secret()) == 32 and totp.new_secret() != totp.new_secret()
    codes = totp.new_recovery_codes()
    assert len(codes) == 10 == len(set(codes))
    assert all(totp.looks_like_recovery_code(code) for code in codes)
    assert totp.looks_like_recovery_code(codes[0].upper().replace("-", " "))
    assert not totp.looks_like_recovery_code("123456")


def test_the_qr_code_is_an_svg_without_the_account_name() -> None:
    uri = totp.provisioning_uri(totp.new_secret(), "<b>owner</b>@example.com")
    assert uri.startswith("otpauth://totp/Codex%20Pooler:")
    svg = totp.qr_svg(uri)
    assert svg.startswith("<svg") and "owner" not in svg and "<script" not in svg
