"""The deployment files, checked without a Docker engine (there is none in CI): the Compose
file against the Compose specification's JSON schema and the wiring between its services,
the Dockerfile's rules, the build context, and ops/generate-env."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
from deploy_support import (
    COMPOSE_SCHEMA,
    DOCKERFILE,
    ROOT,
    build_context,
    env_settings,
    generate_env,
    load_compose,
    parse_dockerfile,
    read_dotenv,
)

from pooler.config import decode_key

CONFIG_SOURCE = (ROOT / "pooler" / "config.py").read_text()
SECRET_VARS = ("CODEX_POOLER_SECRET_KEY", "CODEX_POOLER_UPSTREAM_SECRET_KEY")


@pytest.fixture
def dotenv(tmp_path: Path) -> dict[str, str]:
    result = generate_env(tmp_path / ".env")
    assert result.returncode == 0, result.stderr
    return read_dotenv(tmp_path / ".env")


def compose_validator() -> jsonschema.Draft7Validator:
    """The schema declares draft-07 (as "https://json-schema.org/draft-07/schema")."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def read_by_pooler(name: str) -> bool:
    return f'"{name}"' in CONFIG_SOURCE


# --- compose.yaml ---


def test_the_compose_file_validates_against_the_compose_schema(dotenv: dict[str, str]) -> None:
    validator = compose_validator()
    validator.validate(load_compose())
    validator.validate(load_compose(dotenv))  # as Compose sees it after .env


def test_the_schema_rejects_a_broken_compose_file() -> None:
    """The vendored schema really checks (a service with an unknown key is refused)."""
    doc = load_compose()
    doc["services"]["app"]["depends_on_typo"] = ["db"]
    with pytest.raises(jsonschema.ValidationError):
        compose_validator().validate(doc)


def test_compose_without_an_env_file_stops_with_a_hint() -> None:
    with pytest.raises(KeyError, match="run ops/generate-env first"):
        load_compose({})


def test_compose_services_start_in_order_db_then_migrate_then_app() -> None:
    services = load_compose()["services"]
    db, migrate, app = services["db"], services["migrate"], services["app"]
    assert db["image"] == "postgres:18"
    assert db["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    # postgres:18 keeps its data under /var/lib/postgresql/18/docker: mount the parent.
    assert [v.split(":") for v in db["volumes"]] == [["db-data", "/var/lib/postgresql"]]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert app["command"] == ["serve"]
    assert app["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert app["ports"] == ["4000:4000"]
    assert "pooler-data:/data" in app["volumes"]
    assert set(load_compose()["volumes"]) == {"db-data", "pooler-data"}


def test_compose_gives_pooler_only_variables_it_reads() -> None:
    services = load_compose()["services"]
    for name in ("migrate", "app"):
        env = services[name]["environment"]
        assert set(env) == {"DATABASE_URL", *SECRET_VARS}, name
        assert all(read_by_pooler(var) for var in env), name
    assert "CODEX_POOLER_SECRET_KEY" not in services["db"]["environment"]


def test_the_app_healthcheck_is_the_images(dotenv: dict[str, str]) -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    (healthcheck,) = stages[-1].all("HEALTHCHECK")
    image_test = healthcheck.exec_form()
    assert image_test[0] == "CMD"
    assert load_compose(dotenv)["services"]["app"]["healthcheck"]["test"] == image_test


def test_the_env_file_matches_the_db_service(dotenv: dict[str, str]) -> None:
    db = load_compose(dotenv)["services"]["db"]["environment"]
    url = urlsplit(dotenv["DATABASE_URL"])
    assert url.scheme == "postgresql"
    assert (url.hostname, url.port) == ("db", 5432)  # the service name, inside the network
    assert url.username == db["POSTGRES_USER"]
    assert url.password == db["POSTGRES_PASSWORD"] == dotenv["POSTGRES_PASSWORD"]
    assert url.path == "/" + db["POSTGRES_DB"]


# --- ops/generate-env ---


def test_generate_env_writes_fresh_32_byte_secrets_with_mode_0600(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # a permissive umask must not widen the mode
    try:
        results = [generate_env(tmp_path / f"{n}.env") for n in range(2)]
    finally:
        os.umask(old_umask)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    first, second = (read_dotenv(tmp_path / f"{n}.env") for n in range(2))
    for n in range(2):
        assert stat.S_IMODE((tmp_path / f"{n}.env").stat().st_mode) == 0o600
    assert set(first) == {"POSTGRES_PASSWORD", "DATABASE_URL", *SECRET_VARS}
    for name in SECRET_VARS:
        assert len(decode_key(first[name])) == 32  # what pooler.config accepts
        assert first[name] != second[name]
    assert first["CODEX_POOLER_SECRET_KEY"] != first["CODEX_POOLER_UPSTREAM_SECRET_KEY"]
    assert first["POSTGRES_PASSWORD"] != second["POSTGRES_PASSWORD"]
    assert len(first["POSTGRES_PASSWORD"]) >= 32


def test_generate_env_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("DATABASE_URL=precious\n")
    result = generate_env(path)
    assert result.returncode == 2
    assert "refusing to overwrite" in result.stderr and str(path) in result.stderr
    assert path.read_text() == "DATABASE_URL=precious\n"


def test_generate_env_is_an_executable_stdlib_script() -> None:
    script = ROOT / "ops" / "generate-env"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env python3\n")
    imports = set(re.findall(r"^(?:from|import) (\w+)", text, re.MULTILINE))
    assert imports <= {
        "__future__",
        "argparse",
        "base64",
        "os",
        "secrets",
        "sys",
        "datetime",
        "pathlib",
    }


# --- Dockerfile and .dockerignore ---


def test_the_dockerfile_follows_the_image_rules() -> None:
    args, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert len(stages) >= 2  # multi-stage
    build, final = stages[0], stages[-1]
    version = re.fullmatch(r"python:3\.(\d+)-slim", final.base)
    assert version and int(version.group(1)) >= 11, final.base
    # The wheel is built in the build stage, installed offline in the final one.
    assert any("pip wheel" in i.args for i in build.all("RUN"))
    (install,) = [i for i in final.all("RUN") if "pip install" in i.args]
    assert "--no-index" in install.args and "from=build" in install.args
    for run in final.all("RUN"):
        assert not re.search(r"gcc|build-essential|apt-get|make\b|-dev\b", run.args), run.args
    assert not final.all("COPY") and not final.all("ADD")  # nothing but the installed wheel
    (user,) = final.all("USER")
    assert user.args.split(":")[0] not in {"root", "0"}
    assert final.all("USER")[-1] is user
    (healthcheck,) = final.all("HEALTHCHECK")
    command = healthcheck.exec_form()
    assert command[:3] == ["CMD", "python", "-c"] and "/healthz" in command[3]
    assert final.all("ENTRYPOINT")[-1].exec_form() == ["pooler"]
    assert final.all("CMD")[-1].exec_form() == ["serve"]
    assert [i.args for i in final.all("VOLUME")] == ['["/data"]']
    assert [i.args for i in final.all("EXPOSE")] == ["4000"]
    env: dict[str, str] = {}
    for instruction in final.all("ENV"):
        env.update(env_settings(instruction))
    assert env["CODEX_POOLER_DATA_DIR"] == "/data"
    assert env["CODEX_POOLER_HOST"] == "0.0.0.0"
    assert env["CODEX_POOLER_HTTP_PORT"] == "4000"
    assert "PYTHON_IMAGE" in args


def test_every_env_var_the_dockerfile_sets_is_read_by_pooler() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    names = {name for stage in stages for i in stage.all("ENV") for name in env_settings(i)}
    assert names
    assert {name for name in names if not read_by_pooler(name)} == set()


def test_the_build_context_has_what_the_build_copies_and_no_secrets_or_junk() -> None:
    env_file = ROOT / ".env.test-deploy-files"  # a local secrets file must stay out
    env_file.write_text("secret\n")
    try:
        context = build_context()
    finally:
        env_file.unlink()
    for required in ("pyproject.toml", "README.md", "pooler/config.py"):
        assert required in context
    assert any(f.startswith("pooler/migrations/") and f.endswith(".sql") for f in context)
    assert any(f.startswith("pooler/data/") for f in context)
    assert any(f.startswith("pooler/admin_ui/templates/") for f in context)
    for path in context:
        top = path.split("/")[0]
        assert top not in {".git", "node_modules", "tests", ".venv"}, path
        assert not top.startswith(".env"), path
        assert "__pycache__" not in path and not path.endswith(".pyc"), path
