"""Reading the Pools page's routing-policy form into the store's arguments."""

from __future__ import annotations

from pooler.admin_ui.pages import Form
from pooler.admin_ui.pool_form import read_policy


def test_a_full_form_reads_into_the_stores_arguments() -> None:
    read = read_policy(
        Form(
            [
                ("strategy", "weighted"),
                ("quota_threshold_percent", " 87.5 "),
                ("retry_budget", "2"),
                ("max_in_flight_per_account", "8"),
                ("v1_enabled", "on"),
            ]
        )
    )
    assert read.errors == {}
    assert read.policy == {
        "strategy": "weighted",
        "quota_threshold_percent": 87.5,
        "retry_budget": 2,
        "max_in_flight_per_account": 8,
        "continuity_enabled": False,  # unchecked: off
        "v1_enabled": True,
    }


def test_empty_numbers_are_left_to_the_store_and_non_numbers_refused_by_field() -> None:
    read = read_policy(Form([("retry_budget", "2.5"), ("max_in_flight_per_account", "9" * 40)]))
    assert "strategy" not in read.policy and "quota_threshold_percent" not in read.policy
    assert read.errors == {
        "retry_budget": "Retry budget must be a whole number.",
        "max_in_flight_per_account": "In-flight cap per account must be a whole number.",
    }
    assert read.values["retry_budget"] == "2.5"  # shown again as typed
