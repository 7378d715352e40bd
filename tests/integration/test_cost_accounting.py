"""Cost accounting through the real stack: a request's row gets the cost of the emulator's
usage at the catalog's prices (reasoning inside output, not added; cached input at its own
price), an unlisted model gets none; the rollups, `pooler admin usage --json` and the stats
page agree; rows keep their cost when the prices change; the CLI's errors are clear."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from console_support import OWNER_EMAIL, OWNER_PASSWORD, browser, sign_in
from harness import open_stack, parse_sse, process_env, responses_body, run_pooler

from pooler.cli.main import main
from pooler.db import Database
from pooler.pricing import parse_catalog
from pooler.store import operators
from pooler.store import pools as pool_store

# gpt-5.5 in pooler/data/pricing.json, dollars per 1M tokens, written out here on purpose:
# the test checks the stored cost against the published prices, not against the code.
GPT_55 = {"input": Decimal("5"), "cached_input": Decimal("0.5"), "output": Decimal("30")}
PRICED_MODEL, UNPRICED_MODEL = "gpt-5.5", "gpt-6.1-sol"


def usage_of(response: Any) -> dict[str, int]:
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    assert events[-1]["type"] == "response.completed"
    usage = events[-1]["response"]["usage"]
    return {
        "input": usage["input_tokens"],
        "cached": usage["input_tokens_details"]["cached_tokens"],
        "output": usage["output_tokens"],
        "reasoning": usage["output_tokens_details"]["reasoning_tokens"],
    }


def list_price(usage: dict[str, int]) -> Decimal:
    per_token = {name: price / 1_000_000 for name, price in GPT_55.items()}
    return (
        (usage["input"] - usage["cached"]) * per_token["input"]
        + usage["cached"] * per_token["cached_input"]
        + usage["output"] * per_token["output"]  # reasoning is part of output_tokens
    )


async def row_of(database: Database, request_id: str) -> tuple[Any, ...]:
    return await database.run(
        lambda conn: conn.execute(
            "SELECT model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens,"
            " cost_usd FROM request_logs WHERE request_id = %s",
            (request_id,),
        ).fetchone()
    )


async def test_a_request_is_priced_and_the_rollup_cli_and_page_agree(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        bodies = [
            responses_body("A" * 4000, prompt_cache_key="c", reasoning={"effort": "high"}),
            responses_body("A" * 4000 + " again", prompt_cache_key="c"),
            responses_body(model=UNPRICED_MODEL),
        ]
        answers = []
        with trio.fail_after(30):
            for body in bodies:
                answers.append(await client.post("/backend-api/codex/responses", json=body))
        usages = [usage_of(answer) for answer in answers]
        await stack.wait_for_logs(3)
        rows = [await row_of(stack.database, a.headers["x-request-id"]) for a in answers]

        assert usages[0]["reasoning"] > 0  # the reasoning turn: billed once, as output
        assert usages[1]["cached"] > 0  # the same prefix again: cached input
        for usage, row in zip(usages[:2], rows[:2], strict=True):
            model, input_t, cached, output, reasoning, cost = row
            assert model == PRICED_MODEL
            assert (input_t, cached, output, reasoning) == (
                usage["input"],
                usage["cached"],
                usage["output"],
                usage["reasoning"],
            )
            assert cost == list_price(usage) > 0
        assert rows[2][0] == UNPRICED_MODEL and rows[2][5] is None  # never a guess
        total = rows[0][5] + rows[1][5]

        await stack.gateway.stats_rollups.recent()  # what the leader's job runs
        rollup = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT sum(cost_usd), sum(unpriced_requests) FROM stats_hourly"
            ).fetchone()
        )
        assert rollup == (total, 1)

        env = process_env(stack.config)
        report = json.loads(
            await run_pooler(env, "admin", "usage", "--pool", "demo", "--since", "24h", "--json")
        )
        assert report["pool"] == "demo"
        assert Decimal(report["total"]["cost_usd"]) == total
        assert report["total"]["requests"] == 3 and report["total"]["unpriced_requests"] == 1
        assert report["total"]["output_tokens"] == sum(u["output"] for u in usages)
        for part in ("days", "keys", "accounts"):
            assert sum(Decimal(x["cost_usd"]) for x in report[part]) == total, part
            assert sum(x["requests"] for x in report[part]) == 3, part
        assert len(report["days"]) == 1 and len(report["keys"]) == 1
        text = await run_pooler(env, "admin", "usage", "--pool", "demo", "--since", "7d")
        assert "API-equivalent cost" in text and "1 request(s) of models without a price" in text

        async with browser(stack) as owner:
            await stack.database.run(
                lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            )
            await sign_in(owner)
            page = await owner.get("/admin/stats?window=24h")
            assert page.status_code == 200, page.text
            shown = f"${total:.4f}" if total < Decimal("0.01") else f"${total:,.2f}"
            assert f"<dt>API-equivalent cost</dt><dd>{shown}</dd>" in page.text
            assert "What your seats saved against API prices" in page.text
            assert "1 request of models without a listed price is not counted" in page.text

            # The request's detail page and the exports show each row's stored cost.
            first_id = answers[0].headers["x-request-id"]
            log_id = await stack.database.run(
                lambda conn: conn.execute(
                    "SELECT id FROM request_logs WHERE request_id = %s", (first_id,)
                ).fetchone()[0]
            )
            exact = format(rows[0][5].normalize(), "f")
            detail = await owner.get(f"/admin/request-logs/{log_id}")
            assert f'<dd data-field="cost_usd">{exact}</dd>' in detail.text
            exported = await owner.get("/admin/request-logs/export.csv")
            table = list(csv.reader(io.StringIO(exported.text)))
            costs = {line[1]: line[table[0].index("cost_usd")] for line in table[1:]}
            assert costs[first_id] == exact and costs[answers[2].headers["x-request-id"]] == ""
            lines = (await owner.get("/admin/request-logs/export.jsonl")).text.splitlines()
            by_id = {item["request_id"]: item for item in map(json.loads, lines)}
            assert by_id[first_id]["cost_usd"] == exact


async def test_rows_keep_their_cost_when_the_prices_change(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            first = await client.post("/backend-api/codex/responses", json=responses_body())
            usage = usage_of(first)
            await stack.wait_for_logs(1)
            before = (await row_of(stack.database, first.headers["x-request-id"]))[5]
            assert before == list_price(usage)

            # New prices (as a refresh would bring): twice gpt-5.5's.
            doubled = {k: float(v * 2) for k, v in GPT_55.items()}
            stack.gateway.prices = parse_catalog(
                {"schema": 1, "as_of": "2027-01-01", "source": "t", "models": {"gpt-5.5": doubled}}
            )
            second = await client.post("/backend-api/codex/responses", json=responses_body())
            await stack.wait_for_logs(2)
        after = (await row_of(stack.database, second.headers["x-request-id"]))[5]
        assert after == 2 * list_price(usage_of(second))
        assert (await row_of(stack.database, first.headers["x-request-id"]))[5] == before


@pytest.mark.usefixtures("cli_env")
def test_usage_cli_refuses_an_unknown_pool_and_a_bad_duration(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    database.run_sync(lambda conn: pool_store.create_pool(conn, "team"))
    assert main(["admin", "usage", "--pool", "nope", "--since", "7d"]) == 2
    assert "pool 'nope' not found" in capsys.readouterr().err
    for bad in ("7", "7w", "0d", "-1d", "401d", "1.5d"):
        with pytest.raises(SystemExit) as exit_info:
            main(["admin", "usage", "--pool", "team", f"--since={bad}"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "--since" in err and ("not a duration" in err or "at most 400 days" in err), bad
    assert main(["admin", "usage", "--pool", "team", "--since", "30d", "--json"]) == 0
    empty = json.loads(capsys.readouterr().out)
    assert empty["total"]["requests"] == 0 and empty["total"]["cost_usd"] == "0"
    assert empty["days"] == [] and empty["keys"] == [] and empty["accounts"] == []
