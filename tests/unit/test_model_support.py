"""Per-account model support: an account whose catalog is known and lacks the requested
model is ineligible for it; an unknown catalog allows every model."""

from __future__ import annotations

from pooler.routing.choose import Pin, PoolPolicy, choose_accounts
from pooler.routing.eligibility import MODEL_NOT_SUPPORTED, exclusion
from pooler.routing.snapshot import AccountSnapshot, normalize_scope

NOW = 1_800_000_000.0


def account(name: str, models: list[str] | None) -> AccountSnapshot:
    known = None if models is None else frozenset(normalize_scope(s) for s in models)
    return AccountSnapshot(account_id=name, label=name, models=known)


def test_only_accounts_serving_the_model_are_candidates() -> None:
    accounts = [account("a", ["gpt-x", "gpt-y"]), account("b", ["gpt-y"]), account("c", None)]
    choice = choose_accounts(PoolPolicy("p"), accounts, now=NOW, model="gpt-x")
    assert sorted(c.account_id for c in choice.candidates) == ["a", "c"]
    assert choice.exclusions == {"b": MODEL_NOT_SUPPORTED}
    # The model slug is matched as normalized, like model-scoped limits.
    choice = choose_accounts(PoolPolicy("p"), accounts, now=NOW, model="GPT_Y")
    assert sorted(c.account_id for c in choice.candidates) == ["a", "b", "c"]


def test_no_model_or_unknown_catalog_is_allowed() -> None:
    snapshot = account("b", ["gpt-y"])
    assert exclusion(snapshot, 100.0, NOW) is None  # no model named
    assert exclusion(snapshot, 100.0, NOW, model_scope="gptx") == MODEL_NOT_SUPPORTED
    assert exclusion(account("c", None), 100.0, NOW, model_scope="gptx") is None
    assert exclusion(account("d", []), 100.0, NOW, model_scope="gptx") == MODEL_NOT_SUPPORTED


def test_a_pin_to_an_account_without_the_model_moves() -> None:
    accounts = [account("a", ["gpt-x"]), account("b", ["gpt-y"])]
    choice = choose_accounts(
        PoolPolicy("p"), accounts, now=NOW, model="gpt-x", pin=Pin("b", hard=False)
    )
    assert [c.account_id for c in choice.candidates] == ["a"]
    assert choice.exclusions["b"] == MODEL_NOT_SUPPORTED
