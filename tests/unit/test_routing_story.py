"""The routing story of a request (pooler.web.routing_story), from real router choices:
verdicts in the order they mattered, continuity and its reason, and a bounded size."""

from __future__ import annotations

from pooler.routing.choose import PIN_MOVED, Pin, PoolPolicy, choose_accounts
from pooler.routing.snapshot import AccountSnapshot
from pooler.web.leasing import LeaseAttempts
from pooler.web.request_record import AttemptRecord
from pooler.web.routing_story import CHOSEN, MAX_CANDIDATES, SKIPPED, routing_story

NOW = 1_000_000.0


def attempt(n: int, label: str, code: str | None = None) -> AttemptRecord:
    return AttemptRecord(n, f"id-{label}", label, 0.0, error_code=code)


def test_a_failover_tells_each_account_and_why() -> None:
    snapshots = [
        AccountSnapshot("id-a", "a"),
        AccountSnapshot("id-b", "b"),
        AccountSnapshot("id-c", "c"),
        AccountSnapshot("id-d", "d", lifecycle="paused"),
    ]
    policy = PoolPolicy("pool", strategy="round_robin")
    attempts = LeaseAttempts("pool", ())
    first = choose_accounts(policy, snapshots, now=NOW, pin=Pin("id-a"), limit=3)
    attempts.choices.append(first)
    attempts.exclusions.update(first.exclusions)
    failed, served = attempt(1, "a", "server_error"), attempt(2, "b")
    attempts.exclusions["a"] = "server_error"
    again = choose_accounts(policy, snapshots, now=NOW, exclude=frozenset({"id-a"}), limit=3)
    attempts.choices.append(again)

    story = routing_story(attempts, [failed, served], served, PIN_MOVED, "server_error")

    assert story == {
        "strategy": "round_robin",
        "candidates": [
            {"label": "a", "verdict": "server_error"},
            {"label": "b", "verdict": CHOSEN},
            {"label": "c", "verdict": SKIPPED},
        ],
        "continuity": "moved",
        "continuity_reason": "server_error",
    }


def test_nothing_eligible_lists_at_most_fifty_then_a_count() -> None:
    snapshots = [AccountSnapshot(f"id-{i}", f"acct-{i}", lifecycle="paused") for i in range(120)]
    choice = choose_accounts(PoolPolicy("pool"), snapshots, now=NOW)
    attempts = LeaseAttempts("pool", ())
    attempts.choices.append(choice)
    attempts.exclusions.update(choice.exclusions)

    story = routing_story(attempts, [], None, "none", None)

    assert story is not None
    assert len(story["candidates"]) == MAX_CANDIDATES
    assert story["more"] == 120 - MAX_CANDIDATES
    assert {c["verdict"] for c in story["candidates"]} == {"not_active"}
    assert "continuity_reason" not in story


def test_a_pin_left_out_at_choice_time_names_its_code() -> None:
    snapshots = [AccountSnapshot("id-a", "a", lifecycle="paused"), AccountSnapshot("id-b", "b")]
    choice = choose_accounts(PoolPolicy("pool"), snapshots, now=NOW, pin=Pin("id-a"))
    assert (choice.pin_outcome, choice.pin_reason) == (PIN_MOVED, "not_active")
    gone = choose_accounts(PoolPolicy("pool"), snapshots, now=NOW, pin=Pin("id-gone"))
    assert (gone.pin_outcome, gone.pin_reason) == (PIN_MOVED, "not_in_pool")


def test_no_choice_no_story() -> None:
    assert routing_story(LeaseAttempts("pool", ()), [], None, None, None) is None
