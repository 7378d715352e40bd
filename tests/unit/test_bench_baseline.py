"""ops/bench with `--baseline-tree`: the option, the paths each round runs, the baseline's
requests, its loop-lag sums, the gateway-vs-baseline report, and the checks on the tree."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.unit.bench_support import load_bench

bench = load_bench("bench")
baseline_tree = load_bench("baseline_tree")
cluster = load_bench("cluster")
report = load_bench("report")
runner = load_bench("runner")
scenarios = load_bench("scenarios")

INF = math.inf


def _endpoints(baseline: bool) -> Any:
    return cluster.Endpoints(
        emulator_port=1001,
        relay_port=1002,
        gateway_port=1003,
        access_token="tok",
        account_id="acct",
        pool_key="pk-current",
        gateway_pid=11,
        relay_pid=12,
        emulator_pid=13,
        postgres_pid=14,
        baseline=cluster.BaselineGateway(1004, 21, 24, "pk-old") if baseline else None,
    )


# --- option parsing ---------------------------------------------------------------------


def test_the_option_is_off_by_default_and_takes_a_path(tmp_path: Path) -> None:
    assert bench.parse_args([]).baseline_tree is None
    args = bench.parse_args(["--quick", "--skip-extras", "--baseline-tree", str(tmp_path)])
    assert args.baseline_tree == tmp_path
    assert bench.extras_wanted(args) == ()


@pytest.mark.parametrize("other", [["--scenario", "paced"], ["--profile", "5"]])
def test_the_option_refuses_runs_without_scenarios(tmp_path: Path, other: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        bench.parse_args(["--baseline-tree", str(tmp_path), *other])
    assert exited.value.code == 2


def test_the_help_says_the_extras_stay_on_the_current_gateway(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--baseline-tree PATH" in text
    assert "run on the current gateway only" in text


# --- paths, rotation, targets -----------------------------------------------------------


def test_the_paths_with_and_without_a_baseline() -> None:
    assert scenarios.paths(False) == ("direct", "floor", "gateway")
    assert scenarios.paths(True) == ("direct", "floor", "gateway", "baseline")
    assert runner.Run(None, scenarios.QUICK, report.Results(meta={}), None, {}, {}).paths == (
        scenarios.PATHS
    )
    run = runner.new_run(_endpoints(True), scenarios.QUICK, report.Results(meta={}))
    assert run.paths == scenarios.paths(True)
    assert run.probe_of("baseline").target.port == 1004
    assert run.probe_of("gateway").target.port == 1003
    assert run.probe_of("floor") is None
    assert run.cpu_pid("baseline") == 21 and run.cpu_pid("gateway") == 11


def test_every_path_leads_once_and_all_run_in_every_round() -> None:
    for baseline in (False, True):
        order = scenarios.paths(baseline)
        rounds = [scenarios.rotated(order, i) for i in range(len(order))]
        assert [r[0] for r in rounds] == list(order)
        assert all(sorted(r) == sorted(order) for r in rounds)
    # Without a baseline: the rotation the rounds always had.
    assert scenarios.rotated(scenarios.PATHS, 4) == ("floor", "gateway", "direct")


def test_the_baseline_gets_the_gateway_request_with_its_own_key_and_port() -> None:
    for kind in ("short", "sse"):
        found = scenarios.targets(_endpoints(True), kind, 1)
        gateway, baseline = found["gateway"], found["baseline"]
        assert (gateway.port, baseline.port) == (1003, 1004)
        assert baseline.body == gateway.body
        assert baseline.success_marker == gateway.success_marker
        assert baseline.headers[1:] == gateway.headers[1:]
        assert dict(baseline.headers)[b"authorization"] == b"Bearer pk-old"
        assert dict(gateway.headers)[b"authorization"] == b"Bearer pk-current"
    assert "baseline" not in scenarios.targets(_endpoints(False), "sse", 1)
    endpoints = _endpoints(True)
    assert endpoints.gateway_port_of("baseline") == 1004
    assert endpoints.postgres_pid_of("baseline") == 24
    assert endpoints.postgres_pid_of("gateway") == 14
    assert {21, 24} <= set(endpoints.our_pids())
    with pytest.raises(RuntimeError):
        _endpoints(False).gateway_port_of("baseline")


def test_the_baseline_loop_lag_is_summed_apart_from_the_gateway() -> None:
    run = runner.Run(None, scenarios.QUICK, report.Results(meta={}), None, {}, {})
    sse50 = scenarios.Scenario("sse", 50)
    gateway_key = runner.lag_slot(sse50.key, "latency")
    baseline_key = runner.lag_slot(sse50.key, "latency", "baseline")
    assert gateway_key == (sse50.key, "latency")  # unchanged for the gateway
    run.add_lag(gateway_key, {0.005: 0.0, INF: 0.0}, {0.005: 10.0, INF: 10.0})
    run.add_lag(baseline_key, {0.005: 0.0, INF: 0.0}, {0.005: 0.0, INF: 20.0})
    assert runner.lag_figures(run, sse50)["loop_lag_ticks"] == 10
    assert runner.lag_figures(run, sse50, "baseline")["loop_lag_ticks"] == 20
    # An older gateway without the histogram: its figure is "not measured", not zero.
    run.add_lag(baseline_key, None, None)
    assert math.isnan(runner.lag_figures(run, sse50, "baseline")["loop_lag_p99_ms"])
    assert runner.lag_figures(run, sse50)["loop_lag_ticks"] == 10


# --- the report -------------------------------------------------------------------------


def _results(baseline: bool) -> Any:
    direct = {"p50_ms": 2.0, "p99_ms": 4.0, "ttfb_p50_ms": 1.0, "rps": 300.0, "errors": 0}
    gateway = {
        **direct,
        "p50_ms": 3.0,
        "p99_ms": 6.0,
        "ttfb_p50_ms": 1.5,
        "cpu_us_per_request": 2000.0,
        "cpu_us_per_event": 70.0,
        "rps_per_core": 500.0,
        "loop_lag_p99_ms": 2.0,
        "loop_lag_ticks": 40.0,
    }
    results = report.Results(meta={"date": "d", "machine": "m"})
    sides = {"direct": direct, "floor": dict(direct), "gateway": gateway}
    results.scenarios["idle streams"] = {"gateway": {"kib_per_stream": 30.0, "streams": 20.0}}
    if baseline:
        sides["baseline"] = {
            **gateway,
            "p50_ms": 3.5,
            "cpu_us_per_request": 2500.0,
            "rps_per_core": 400.0,
            "loop_lag_p99_ms": math.nan,  # an older gateway: not measured
            "loop_lag_ticks": math.nan,
        }
        results.scenarios["idle streams"]["baseline"] = {"kib_per_stream": 40.0, "streams": 20.0}
        results.meta["code"] = {
            "gateway": {"pooler": "/new/pooler/__init__.py", "commit": "a" * 40, "dirty": True},
            "baseline": {"pooler": "/old/pooler/__init__.py", "commit": "b" * 40, "dirty": False},
        }
    results.scenarios["sse c=50"] = sides
    results.errors = {"gateway": Counter()}
    return results


def _row(rows: list[dict[str, Any]], scenario: str, metric: str) -> dict[str, Any]:
    return next(r for r in rows if r["scenario"] == scenario and r["metric"] == metric)


def test_the_comparison_rows_take_differences_and_changes() -> None:
    rows = report.versus_baseline(_results(True).scenarios)
    cpu = _row(rows, "sse c=50", "cpu_us_per_request")
    assert (cpu["baseline"], cpu["gateway"], cpu["difference"]) == (2500.0, 2000.0, -500.0)
    assert cpu["change"] == pytest.approx(-0.2)
    p50 = _row(rows, "sse c=50", "p50_ms")  # added: minus direct, and no percentage
    assert (p50["baseline"], p50["gateway"], p50["difference"], p50["change"]) == (
        1.5,
        1.0,
        -0.5,
        None,
    )
    lag = _row(rows, "sse c=50", "loop_lag_p99_ms")
    assert (lag["baseline"], lag["gateway"], lag["difference"]) == (None, 2.0, None)
    assert _row(rows, "sse c=50", "rps_per_core")["higher_is_better"]
    idle = _row(rows, "idle streams", "kib_per_stream")
    assert idle["change"] == pytest.approx(-0.25)
    assert report.versus_baseline(_results(False).scenarios) == []


def test_the_json_has_the_baseline_beside_the_gateway_and_the_comparison() -> None:
    saved = json.loads(json.dumps(report.to_json(_results(True))))
    entry = saved["scenarios"][0]
    assert entry["baseline"]["cpu_us_per_request"] == 2500.0
    assert entry["baseline"]["loop_lag_p99_ms"] is None
    assert _row(saved["gateway_vs_baseline"], "sse c=50", "p99_ms")["difference"] == 0.0
    text = report.markdown(saved)
    assert "| sse c=50 | baseline | 3.50 |" in text
    assert "Gateway vs baseline" in text
    assert "| scenario | CPU µs/req | CPU µs/event | added p50 ms |" in text
    assert "2,500 → 2,000 (-20.0 %)" in text
    assert "1.50 → 1.00 (-0.50)" in text
    assert "- → 2.00 |" in text  # the old gateway had no loop-lag histogram
    assert "Idle streams, KiB per idle stream: 40.00 → 30.00 (-25.0 %)." in text
    assert f"- baseline: {'b' * 12} (/old/pooler/__init__.py)" in text
    assert f"- gateway: {'a' * 12} + uncommitted changes" in text
    assert "- baseline: not measured (its /metrics has no loop-lag histogram)" in text
    assert "(baseline): p50" not in text
    # A baseline with the histogram gets its own loop-lag lines.
    measured = _results(True)
    measured.scenarios["sse c=50"]["baseline"].update(loop_lag_p99_ms=4.0, loop_lag_ticks=30.0)
    text = report.markdown(json.loads(json.dumps(report.to_json(measured))))
    assert "- sse c=50 (baseline): p50 - ms, p99 4.00 ms over 30 ticks" in text
    assert "2.00 → 4.00" not in text and "4.00 → 2.00 (-2.00)" in text


def test_a_run_without_a_baseline_renders_as_before() -> None:
    saved = json.loads(json.dumps(report.to_json(_results(False))))
    assert "gateway_vs_baseline" not in saved
    assert "baseline" not in saved["scenarios"][0]
    text = report.markdown(saved)
    assert "baseline" not in text
    assert "Code under test" not in text
    # A saved JSON from before the option (no baseline anywhere) still renders.
    del saved["scenarios"][0]["gateway"]["loop_lag_ticks"]
    assert "| sse c=50 | gateway | 3.00 |" in report.markdown(saved)


# --- the tree ---------------------------------------------------------------------------


def test_requirements_are_read_and_checked_against_this_python() -> None:
    pyproject = '[project]\nname = "x"\ndependencies = ["trio>=0.1", "h11"]\n'
    assert baseline_tree.requirements(pyproject) == ["trio>=0.1", "h11"]
    assert baseline_tree.requirements('[project]\nname = "x"\n') == []
    assert baseline_tree.unmet_requirements(["trio>=0.1", "h11"]) == []
    unmet = baseline_tree.unmet_requirements(
        ["no-such-package-for-the-bench>=1", "trio<0.0.1", 'h11; sys_platform == "nowhere"']
    )
    assert unmet[0] == "no-such-package-for-the-bench>=1"
    assert unmet[1].startswith("trio<0.0.1 (installed: ")
    assert len(unmet) == 2  # a marker that excludes this platform is met


def _checkout(root: Path, dependencies: list[str]) -> Path:
    (root / "pooler").mkdir(parents=True)
    (root / "pooler" / "__init__.py").write_text("")
    listed = ", ".join(json.dumps(d) for d in dependencies)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "codex-pooler"\ndependencies = [{listed}]\n'
    )
    return root


def test_a_tree_missing_a_dependency_is_refused_with_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not a Codex Pooler checkout"):
        baseline_tree.Tree.at(tmp_path)
    tree = baseline_tree.Tree.at(_checkout(tmp_path / "old", ["no-such-package-for-the-bench"]))
    with pytest.raises(RuntimeError) as refused:
        baseline_tree.check_requirements(tree)
    assert "-m pip install 'no-such-package-for-the-bench'" in str(refused.value)
    assert "share this Python's site-packages" in str(refused.value)
    with pytest.raises(RuntimeError, match="no-such-package"):  # before any process starts
        cluster.Cluster(None, lambda _: None, baseline_tree=tree.root)


def test_the_tree_environment_imports_its_own_pooler(tmp_path: Path) -> None:
    root = _checkout(tmp_path / "old", ["trio"])
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "old code"], check=True)
    tree = baseline_tree.Tree.at(root)
    baseline_tree.check_requirements(tree)
    env = tree.env({"PATH": "/usr/bin:/bin", "PYTHONPATH": "/elsewhere"}, tmp_path / "data")
    assert env["PYTHONPATH"] == str(root.resolve())
    assert env["CODEX_POOLER_DATA_DIR"] == str(tmp_path / "data")
    assert tree.argv() == [sys.executable, "-m", "pooler.cli.main"]
    found = baseline_tree.code_identity(env, root)
    assert found["pooler"] == str(root.resolve() / "pooler" / "__init__.py")
    assert found["subject"] == "old code" and found["dirty"] is False
    assert len(str(found["commit"])) == 40
    assert baseline_tree.imports_from(found, root)
    assert not baseline_tree.imports_from(found, tmp_path / "other")
    (root / "pooler" / "__init__.py").write_text("# changed\n")
    assert baseline_tree.code_identity(env, root)["dirty"] is True
