"""The Helm chart charts/codex-pooler, checked without a cluster or a `helm` binary.

Always: values.yaml and every charts/codex-pooler/ci/*.yaml against values.schema.json
(jsonschema, draft-07), and bad value sets that must be refused; each template's Go-template
structure (tests/helm_support.py); the environment contract with pooler/config.py.
With helm-python-sdk installed (the `test` extra; Helm's own Go engine, v4, in a shared
library): `helm lint` and rendering with each value set, every rendered document parsed as
YAML and checked, and the rendered environment loaded by pooler's own `load_config`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from harness import missing_client
from helm_support import (
    CHART,
    ROOT,
    TemplateSyntaxError,
    defined_names,
    depth_at,
    included_names,
    merge_values,
    parse_template,
    secrets_pooler_requires_with_a_database,
    variables_pooler_reads,
)

from pooler.config import ConfigError, load_config

TEMPLATES = CHART / "templates"
VALUE_FILES = sorted((CHART / "ci").glob("*.yaml"))
REQUIRED = {"image": {"tag": "0.1.0"}, "existingSecret": "codex-pooler-secrets"}
KEY = "A" * 43 + "="  # 32 bytes, base64


def chart_values() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(values, dict)
    return values


def validator() -> jsonschema.Draft7Validator:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def refusals(*overrides: dict[str, Any]) -> set[str]:
    """The paths (`image.tag`) at which the schema refuses values.yaml + the overrides, in
    order (as `helm install -f a.yaml -f b.yaml`)."""
    merged = chart_values()
    for override in overrides:
        merged = merge_values(merged, override)
    return {".".join(map(str, e.absolute_path)) for e in validator().iter_errors(merged)}


def template_sources() -> Iterator[tuple[Path, str]]:
    for path in sorted(TEMPLATES.iterdir()):
        yield path, path.read_text()


# --- Chart.yaml ---


def test_chart_metadata_and_app_version_match_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "codex-pooler"
    assert chart["type"] == "application"
    assert chart["appVersion"] == project["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])


# --- values.yaml against values.schema.json ---


def test_values_yaml_with_the_two_required_values_validates() -> None:
    assert refusals(REQUIRED) == set()


def test_values_yaml_alone_is_refused_only_for_the_tag_and_the_secret() -> None:
    """The two values without a usable default; every other default is valid."""
    assert refusals({}) == {"image.tag", "existingSecret"}


@pytest.mark.parametrize("path", VALUE_FILES, ids=lambda p: p.name)
def test_each_example_value_file_validates(path: Path) -> None:
    assert refusals(yaml.safe_load(path.read_text())) == set()


BAD_VALUES = {
    "tag latest": ({"image": {"tag": "latest"}}, "image.tag"),
    "tag missing": ({"image": {"tag": None}}, "image"),
    "tag empty": ({"image": {"tag": ""}}, "image.tag"),
    "tag with a space": ({"image": {"tag": "1.0 beta"}}, "image.tag"),
    "existingSecret missing": ({"existingSecret": None}, ""),
    "existingSecret not a name": ({"existingSecret": "My_Secret"}, "existingSecret"),
    "web replicas 0": ({"web": {"replicas": 0}}, "web.replicas"),
    "web replicas a string": ({"web": {"replicas": "2"}}, "web.replicas"),
    "worker replicas 0": ({"worker": {"replicas": 0}}, "worker.replicas"),
    "worker role web": ({"worker": {"role": "web"}}, "worker.role"),
    "drain above 3600": ({"config": {"drainSeconds": 3601}}, "config.drainSeconds"),
    "unknown log level": ({"config": {"logLevel": "verbose"}}, "config.logLevel"),
    "a typo at the top": ({"replicaCount": 3}, ""),
    "a typo in web": ({"web": {"replica": 3}}, "web"),
    "a digest not sha256": ({"image": {"digest": "md5:abc"}}, "image.digest"),
    "grace period 0": (
        {"web": {"terminationGracePeriodSeconds": 0}},
        "web.terminationGracePeriodSeconds",
    ),
}


@pytest.mark.parametrize("override, path", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_the_schema_refuses_bad_values(override: dict[str, Any], path: str) -> None:
    assert path in refusals(REQUIRED, override)


# --- templates: Go-template structure ---


def test_every_template_is_well_formed() -> None:
    defined: set[str] = set()
    included: set[str] = set()
    for path, source in template_sources():
        try:
            actions = parse_template(source)
        except TemplateSyntaxError as exc:
            pytest.fail(f"{path.name}: {exc}")
        defined |= defined_names(actions)
        included |= included_names(actions)
    assert included <= defined, f"included but not defined: {included - defined}"
    assert "codex-pooler.env" in defined


@pytest.mark.parametrize(
    "source, complaint",
    [
        ("{{ if .Values.a }}x", "not closed"),
        ("x{{ end }}", "without a block"),
        ("{{ .Values.a | quoet }}", "unknown function 'quoet'"),
        ("{{ .Values.a }", "not closed"),
        ("a }} b", "without an action"),
        ('{{ include "x" {{ . }}', "inside the action"),
        ("{{/* open comment }}", "not closed"),
        ("{{ else }}", "outside"),
    ],
)
def test_the_structure_check_catches_broken_templates(source: str, complaint: str) -> None:
    """The checker above really checks: each broken form is refused, with its reason."""
    with pytest.raises(TemplateSyntaxError, match=re.escape(complaint)):
        parse_template(source)


def test_the_templates_name_no_secret_kind_and_no_secret_values() -> None:
    """Secrets come only from the existing Secret: the chart never creates one."""
    for path, source in template_sources():
        assert not re.search(r"^kind:\s*Secret\b", source, re.M), path.name
        assert "b64enc" not in source and "stringData" not in source, path.name


# --- the environment contract with pooler ---


def chart_env_names() -> dict[str, bool]:
    """Each variable the chart sets (`- name: X` in an env list) -> whether it is set
    unconditionally (not inside an if/with/range of the env definition)."""
    source = (TEMPLATES / "_helpers.tpl").read_text()
    actions = parse_template(source)
    names: dict[str, bool] = {}
    for match in re.finditer(r"^\s*- name: ([A-Z][A-Z0-9_]*)\s*$", source, re.M):
        names[match.group(1)] = depth_at(actions, match.start()) == 1  # only the define
    return names


def test_only_the_helpers_set_environment_variables() -> None:
    """One definition of the environment, used by every container of the chart."""
    for path, source in template_sources():
        if path.name != "_helpers.tpl":
            assert not re.search(r"^\s*- name: [A-Z][A-Z0-9_]*\s*$", source, re.M), path.name
            if "containers:" in source:
                assert 'include "codex-pooler.env"' in source, path.name


def test_every_variable_the_chart_sets_is_one_pooler_reads() -> None:
    read = variables_pooler_reads()
    assert {"DATABASE_URL", "CODEX_POOLER_ROLE", "CODEX_POOLER_DRAIN_SECONDS"} <= read
    assert set(chart_env_names()) <= read, set(chart_env_names()) - read


def test_every_variable_pooler_requires_is_set_by_the_chart_unconditionally() -> None:
    """With DATABASE_URL set (several pods on one database) pooler refuses to start without
    its two secrets; the chart sets them, and DATABASE_URL, whatever the values."""
    required = secrets_pooler_requires_with_a_database()
    assert required == {"CODEX_POOLER_SECRET_KEY", "CODEX_POOLER_UPSTREAM_SECRET_KEY"}
    always = {name for name, unconditional in chart_env_names().items() if unconditional}
    assert required | {"DATABASE_URL", "CODEX_POOLER_ROLE", "CODEX_POOLER_HOST"} <= always


# --- rendered by Helm's own engine (helm-python-sdk) ---


@pytest.fixture(scope="module")
def helm() -> Any:
    try:
        import helm_python
    except ImportError:
        missing_client(
            "helm-python-sdk (Helm's engine, no helm binary) is not installed:"
            " pip install -e '.[test]' enables this test"
        )
    return helm_python


@pytest.fixture(scope="module")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each rendered manifest file -> its YAML documents (NOTES.txt is text, left out)."""
    out = chart.render(values, name="codex-pooler", namespace="pooler", is_install=True)
    docs: dict[str, list[dict[str, Any]]] = {}
    for name, text in out.items():
        if name.endswith(".yaml"):
            docs[name.rsplit("/", 1)[-1]] = [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for ds in docs.values() for d in ds}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


@pytest.mark.parametrize("path", VALUE_FILES, ids=lambda p: p.name)
def test_helm_lint_passes_with_each_value_file(helm: Any, path: Path) -> None:
    report = helm.lint(str(CHART), yaml.safe_load(path.read_text()), strict=True)
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("path", VALUE_FILES, ids=lambda p: p.name)
def test_each_value_file_renders_to_valid_kubernetes_objects(chart: Any, path: Path) -> None:
    values = yaml.safe_load(path.read_text())
    merged = merge_values(chart_values(), values)
    objects = by_kind(render(chart, values))
    kinds = sorted(kind for kind, _ in objects)
    for obj in objects.values():
        assert obj["apiVersion"] and obj["metadata"]["labels"]["app.kubernetes.io/instance"]
    assert "Secret" not in kinds

    web = objects[("Deployment", "codex-pooler-web")]
    spec = web["spec"]
    assert spec["replicas"] == merged["web"]["replicas"]
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = spec["template"]["spec"]
    main = container(web)
    assert main["args"] == ["serve"]
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    sleep = int(main["lifecycle"]["preStop"]["exec"]["command"][1])
    assert main["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert sleep == merged["web"]["preStopSleepSeconds"]
    assert pod["terminationGracePeriodSeconds"] >= sleep + merged["config"]["drainSeconds"] + 5
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in main["volumeMounts"]} == {"/data", "/tmp"}
    assert main["resources"]["requests"] and main["resources"]["limits"]
    image = main["image"]
    assert image.split("@")[0].endswith(":" + merged["image"]["tag"])
    env = env_of(main)
    assert env["CODEX_POOLER_ROLE"]["value"] == "web"
    assert env["CODEX_POOLER_HOST"]["value"] == "0.0.0.0"

    service = objects[("Service", "codex-pooler")]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "web"
    assert service["spec"]["ports"][0]["port"] == merged["service"]["port"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert main["ports"][0]["containerPort"] == int(env["CODEX_POOLER_HTTP_PORT"]["value"])

    worker = objects.get(("Deployment", "codex-pooler-worker"))
    assert (worker is not None) == merged["worker"]["enabled"]
    if worker is not None:
        assert worker["spec"]["replicas"] == merged["worker"]["replicas"]
        assert env_of(container(worker))["CODEX_POOLER_ROLE"]["value"] == merged["worker"]["role"]
        assert container(worker)["image"] == image

    job = objects.get(("Job", "codex-pooler-migrate"))
    assert (job is not None) == merged["migration"]["enabled"]
    if job is not None:
        notes = job["metadata"]["annotations"]
        assert notes["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert "hook-succeeded" in notes["helm.sh/hook-delete-policy"]
        job_pod = job["spec"]["template"]["spec"]
        assert job_pod["restartPolicy"] == "Never"
        assert job_pod["containers"][0]["args"] == ["migrate"]

    pdb = objects.get(("PodDisruptionBudget", "codex-pooler-web"))
    assert (pdb is not None) == merged["web"]["podDisruptionBudget"]["enabled"]
    assert (("Ingress", "codex-pooler") in objects) == merged["ingress"]["enabled"]
    assert (("ServiceMonitor", "codex-pooler") in objects) == merged["serviceMonitor"]["enabled"]

    # Every secret comes from the one existing Secret, under the configured key names.
    for obj in objects.values():
        for ref in re.findall(r"'secretKeyRef': \{([^}]*)\}", str(obj)):
            assert f"'name': '{merged['existingSecret']}'" in ref


def test_the_full_example_renders_its_ingress_and_service_monitor(chart: Any) -> None:
    values = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    objects = by_kind(render(chart, values))
    ingress = objects[("Ingress", "codex-pooler")]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_session_id"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "codex-pooler", "port": {"number": 80}}
    monitor = objects[("ServiceMonitor", "codex-pooler")]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"] == {"name": "pooler-metrics", "key": "token"}
    metrics = objects[("Service", "codex-pooler-metrics")]
    assert "app.kubernetes.io/component" not in metrics["spec"]["selector"]  # web and worker
    web = container(objects[("Deployment", "codex-pooler-web")])
    old = env_of(web)["CODEX_POOLER_UPSTREAM_SECRET_KEYS_OLD"]["valueFrom"]["secretKeyRef"]
    assert old == {"name": "pooler-prod", "key": "upstream-secret-keys-old", "optional": True}
    assert web["image"].startswith("registry.example.com/team/codex-pooler:0.1.0@sha256:")


def test_without_a_token_secret_the_monitor_scrapes_without_one(chart: Any) -> None:
    objects = by_kind(render(chart, merge_values(REQUIRED, {"serviceMonitor": {"enabled": True}})))
    (endpoint,) = objects[("ServiceMonitor", "codex-pooler")]["spec"]["endpoints"]
    assert "authorization" not in endpoint


REFUSED_RENDERS = {
    "tag latest": ({"image": {"tag": "latest"}}, "image/tag"),
    "no tag": ({"image": {"tag": None}}, "tag"),
    "no existingSecret": ({"existingSecret": None}, "existingSecret"),
    "no replicas": ({"web": {"replicas": 0}}, "web/replicas"),
    "grace below drain": (
        {"web": {"terminationGracePeriodSeconds": 30}},
        "must be at least web.preStopSleepSeconds + config.drainSeconds + 5 (40)",
    ),
    "token secret without key": (
        {"serviceMonitor": {"enabled": True, "bearerTokenSecret": {"name": "m"}}},
        "needs both name and key",
    ),
}


@pytest.mark.parametrize("override, message", REFUSED_RENDERS.values(), ids=REFUSED_RENDERS.keys())
def test_helm_refuses_to_render_bad_values(
    helm: Any, chart: Any, override: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError) as refused:
        chart.render(merge_values(REQUIRED, override), name="codex-pooler")
    assert message in str(refused.value)


def test_the_rendered_environment_starts_pooler_and_each_secret_is_needed(
    chart: Any, tmp_path: Path
) -> None:
    """pooler's own load_config, given the environment the web container gets (secret
    references filled with valid values), accepts it without writing to its data dir (the
    root filesystem is read-only); without either secret key it refuses to start."""
    objects = by_kind(render(chart, REQUIRED))
    env: dict[str, str] = {}
    for name, entry in env_of(container(objects[("Deployment", "codex-pooler-web")])).items():
        if "value" in entry:
            env[name] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == REQUIRED["existingSecret"]
            env[name] = "postgresql://pooler@db/pooler" if name == "DATABASE_URL" else KEY
    assert set(env) <= variables_pooler_reads()
    env["CODEX_POOLER_DATA_DIR"] = str(tmp_path / "data")
    config = load_config(env)
    assert (config.host, config.port, config.role) == ("0.0.0.0", 4000, "web")
    assert config.database_url == "postgresql://pooler@db/pooler"
    assert config.drain_seconds == chart_values()["config"]["drainSeconds"]
    assert not (tmp_path / "data").exists()
    needed = set()
    for name in env:
        try:
            load_config({k: v for k, v in env.items() if k != name})
        except ConfigError:
            needed.add(name)
    assert needed == secrets_pooler_requires_with_a_database()


# --- the README's install commands ---


def readme_install_commands() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Kubernetes (Helm)", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README Kubernetes (Helm) has no sh block"
    return match.group(1)


def test_the_readme_install_commands_match_the_chart() -> None:
    """The Secret the README creates has the keys the chart reads by default, and its
    `helm install --set` values validate against the schema."""
    commands = readme_install_commands()
    created = set(re.findall(r"--from-literal=([A-Z_]+)=", commands))
    assert created == set(chart_values()["secretKeys"].values()) - {""}
    override: dict[str, Any] = {}
    for key, value in re.findall(r"--set ([\w.]+)=(\S+)", commands):
        *parents, leaf = key.split(".")
        node = override
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    assert {"image", "existingSecret"} <= set(override)
    assert refusals(override) == set()
    assert "kubectl" in commands and f"secret generic {override['existingSecret']}" in commands
