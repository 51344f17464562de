"""deploy/: Prometheus config and rules (promtool), alert unit tests, the Grafana dashboard,
the compose file (compose-spec schema), the Kubernetes manifests (Kubernetes JSON schemas),
the KEDA ScaledObjects (fields, and list names checked against a real Dramatiq broker), the
Dockerfile and, where a Docker daemon runs, the image build."""

from __future__ import annotations

import copy
import inspect
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis
import yaml

from producers.wire import INTAKE_OTP_QUEUE, NAMESPACE, delayed_queue
from tests.support.deploy_files import (
    COMPOSE,
    DASHBOARD,
    DEPLOY,
    KUBERNETES,
    OPERATIONS,
    PROMETHEUS_CONFIG,
    ROOT,
    RULE_TESTS,
    RULES,
    alert_rules,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    load_yaml,
    load_yaml_all,
    require_tool,
)
from tests.support.sandboxes import SandboxFactory
from worker.core.config import ConfigError, parse_settings

# The alerts the operations runbook promises (docs/operations.md has a section for each).
EXPECTED_ALERTS = {
    "SmsqBacklogGrowing",
    "SmsqOldestMessageTooOld",
    "SmsqProviderErrorRatioHigh",
    "SmsqAccountPaused",
    "SmsqRateLimitSaturated",
    "SmsqBalanceLow",
    "SmsqDeadLettersGrowing",
    "SmsqReconciliationLagging",
    "SmsqProcessDown",
    "SmsqSchedulerLeaseUnheld",
}


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- Prometheus


def test_promtool_check_config_loads_the_rules() -> None:
    promtool = require_tool("promtool")
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool")
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    result = run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests really evaluate the rules: flip one expectation and promtool fails."""
    promtool = require_tool("promtool")
    source = RULE_TESTS[0]
    data = load_yaml(source)
    data["rule_files"] = [str((source.parent / f).resolve()) for f in data["rule_files"]]
    test = next(t for t in data["tests"] if any(c["exp_alerts"] for c in t["alert_rule_test"]))
    data["tests"] = [test]
    next(c for c in test["alert_rule_test"] if c["exp_alerts"])["exp_alerts"] = []
    broken = tmp_path / "broken.test.yml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run(promtool, "test", "rules", str(broken))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts == EXPECTED_ALERTS
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for test in load_yaml(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case["exp_alerts"] else silent).add(case["alertname"])
    assert firing == alerts, f"no firing test for {sorted(alerts - firing)}"
    assert silent == alerts, f"no silent test for {sorted(alerts - silent)}"


def test_every_alert_has_a_runbook_section() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    headings = {m.group(1) for m in re.finditer(r"^###\s+(Smsq\w+)\s*$", text, re.M)}
    for rule in alert_rules():
        name = rule["alert"]
        assert name in headings, f"docs/operations.md has no '### {name}' section"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"
        assert rule["labels"]["severity"] in ("warning", "critical")
        section = text.split(f"### {name}", 1)[1].split("\n### ", 1)[0]
        for word in ("smsq", "dashboard"):
            assert word in section, f"runbook section {name} does not mention {word}"


def test_scrape_config_has_a_job_per_process() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"smsq-worker", "smsq-scheduler", "smsq-web"} <= set(jobs)
    compose = load_yaml(COMPOSE)
    for name in ("smsq-worker", "smsq-scheduler", "smsq-web"):
        for sd in jobs[name]["dns_sd_configs"]:
            for service in sd["names"]:
                assert service in compose["services"], f"{name} scrapes unknown service {service}"
    settings = _compose_settings()
    assert jobs["smsq-worker"]["dns_sd_configs"][0]["port"] == settings.metrics.worker_port
    assert jobs["smsq-scheduler"]["dns_sd_configs"][0]["port"] == settings.metrics.scheduler_port
    assert jobs["smsq-web"]["dns_sd_configs"][0]["port"] == settings.web.port


# --------------------------------------------------------------------------- Grafana


def test_dashboard_uid_datasource_variable_and_units() -> None:
    data = dashboard()
    assert data["uid"] == "smsq-overview"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard_panels()
    assert len(panels) >= 20
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit, f"panel {panel['title']!r} has no unit"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine


def test_dashboard_covers_the_operators_questions() -> None:
    text = DASHBOARD.read_text(encoding="utf-8")
    for metric in (
        "smsq_recipients_final_total",
        "smsq_time_to_submit_seconds_bucket",
        "smsq_time_to_final_seconds_bucket",
        "smsq_provider_requests_total",
        "smsq_limiter_utilisation",
        "smsq_queue_messages",
        "smsq_queue_oldest_message_age_seconds",
        "smsq_account_balance",
        "smsq_dead_letters_held",
        "smsq_reconcile_lag_seconds",
    ):
        assert metric in text, f"dashboard has no panel on {metric}"


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """Each query becomes a recording rule that promtool parses and type-checks."""
    promtool = require_tool("promtool")
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": expr}
        for i, (_title, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    compose = load_yaml(COMPOSE)
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert (
        DEPLOY
        / mounts["./grafana/dashboards"].replace(
            "/var/lib/grafana/dashboards/smsq", "grafana/dashboards"
        )
    ).is_dir()
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/smsq.yml")["providers"][0]
    assert provider["options"]["path"] == mounts["./grafana/dashboards"]
    datasource = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    assert datasource["datasources"][0]["type"] == "prometheus"
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


# --------------------------------------------------------------------------- compose


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    checker = Path(sys.executable).parent / "check-jsonschema"
    return run(str(checker), "--builtin-schema", "vendor.compose-spec", str(path))


def test_compose_file_matches_the_compose_spec_schema() -> None:
    result = _check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    data = load_yaml(COMPOSE)
    data["services"]["worker"]["stop_grace_priod"] = "11m"  # misspelt key
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = _check_compose(broken)
    assert result.returncode != 0
    assert "stop_grace_priod" in result.stdout + result.stderr


def test_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None or run(docker, "compose", "version").returncode != 0:
        pytest.skip("no docker CLI with the compose plugin here (the schema check above ran)")
    result = run(docker, "compose", "-f", str(COMPOSE), "config", "--quiet")
    assert result.returncode == 0, result.stderr


def _compose_settings() -> Any:
    """deploy/smsq.compose.toml parsed by smsq itself, its secret files read from sandbox-secrets/."""
    text = (DEPLOY / "smsq.compose.toml").read_text(encoding="utf-8")
    text = text.replace("/run/secrets/", f"{DEPLOY / 'sandbox-secrets'}/")
    return parse_settings(tomllib.loads(text), {"REDIS_URL": "redis://redis:6379/0"})


def test_compose_stack() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert {"redis", "worker", "worker-otp", "scheduler", "web", "prometheus", "grafana"} <= set(
        services
    )
    redis_args = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_args
    assert "--maxmemory-policy noeviction" in redis_args
    otp = services["worker-otp"]["command"]
    assert otp[otp.index("--queues") + 1 :] == ["smsq-intake-otp", "smsq-dispatch-otp"]
    for name in ("worker", "worker-otp", "scheduler", "web"):
        service = services[name]
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["healthcheck"]["test"][:3] == ["CMD", "smsq", "health"]
    assert _seconds(services["worker"]["stop_grace_period"]) > _worker_graceful_stop()
    for secret in compose["secrets"].values():
        assert (DEPLOY / secret["file"]).is_file()
    settings = _compose_settings()  # valid, every secret file readable
    assert set(settings.accounts) == {"intis-sandbox", "smsc-sandbox", "intellisoftware-sandbox"}
    prom_mounts = services["prometheus"]["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in prom_mounts


def _seconds(value: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+)(h|m|s)", value):
        total += int(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def _worker_graceful_stop() -> float:
    """Seconds `smsq worker` may take to stop with the default [worker] shutdown_timeout: its
    supervisor kills what is left KILL_MARGIN seconds after that."""
    from worker.core.config import WorkerSettings
    from worker.entry.supervisor import KILL_MARGIN

    return WorkerSettings().shutdown_timeout + KILL_MARGIN


# --------------------------------------------------------------------------- Kubernetes


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in load_yaml_all(path):
            out.append((path, doc))
    return out


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _manifests() if doc["kind"] == kind}


@pytest.mark.parametrize("version", ["1.29.0", kubernetes_validate.latest_version()])
def test_kubernetes_manifests_validate_strictly(version: str) -> None:
    validated, unknown = 0, set()
    for path, doc in _manifests():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            validated += 1
        except kubernetes_validate.SchemaNotFoundError:
            unknown.add(doc["kind"])
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata'].get('name')}: {exc.message}")
    assert unknown == {"ScaledObject", "Kustomization"}  # checked by the tests below
    assert validated >= 12


def test_kubernetes_validator_rejects_a_broken_deployment() -> None:
    deployment = copy.deepcopy(_by_kind("Deployment")["worker"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["httpGet"]["paht"] = "/healthz"  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    files = {p.name for p in KUBERNETES.glob("*.yaml")}
    assert set(kustomization["resources"]) == files - {"kustomization.yaml", "secret.example.yaml"}


def _container(name: str) -> dict[str, Any]:
    container: dict[str, Any] = _by_kind("Deployment")[name]["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def test_deployments_probes_grace_and_replicas() -> None:
    deployments = _by_kind("Deployment")
    assert set(deployments) == {"worker", "worker-otp", "scheduler", "web"}
    assert deployments["scheduler"]["spec"]["replicas"] == 2  # the lease keeps one active
    from aiohttp import web as aiohttp_web

    graceful_stop = {
        "worker": _worker_graceful_stop(),
        "worker-otp": _worker_graceful_stop(),
        "scheduler": inspect.signature(_scheduler_stop()).parameters["timeout"].default,
        "web": inspect.signature(aiohttp_web.run_app).parameters["shutdown_timeout"].default,
    }
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > graceful_stop[name], name
        container = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            http = container[probe]["httpGet"]
            assert http["path"] == "/healthz" and http["port"] in ports, (name, probe)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsNonRoot"] is True
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _container("worker")["ports"][0]["containerPort"] == 9191
    assert _container("scheduler")["ports"][0]["containerPort"] == 9192
    assert _container("web")["ports"][0]["containerPort"] == 8080


def _scheduler_stop() -> Any:
    from worker.tracking.scheduler import Scheduler

    return Scheduler.stop


def test_services_select_their_pods() -> None:
    deployments = _by_kind("Deployment")
    for name, service in _by_kind("Service").items():
        if name == "redis":
            continue
        selector = service["spec"]["selector"]
        matched = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched, f"service {name} selects no pod"
        for port in service["spec"]["ports"]:
            for d in matched:
                names = {p["name"] for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]}
                assert port["targetPort"] in names, (name, port)
    workers = _by_kind("Service")["smsq-worker-metrics"]["spec"]["selector"]
    assert {
        d
        for d, dep in deployments.items()
        if workers.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    } == {"worker", "worker-otp"}


def test_config_map_is_a_valid_config_with_file_secrets_from_the_secret_mount() -> None:
    toml_text = _by_kind("ConfigMap")["smsq-config"]["data"]["smsq.toml"]
    data = tomllib.loads(toml_text)
    referenced: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"file"}:
                referenced.add(node["file"])
            if "env" in node and set(node) == {"env"}:
                pytest.fail(f"credential by environment variable in the ConfigMap: {node}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    assert referenced
    for name in ("worker", "worker-otp", "scheduler", "web"):
        pod = _by_kind("Deployment")[name]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        secret_mount = next(path for path, volume in mounts.items() if "secret" in volumes[volume])
        assert volumes[mounts[secret_mount]]["secret"]["secretName"] == "smsq-credentials"
        assert all(Path(f).parent == Path(secret_mount) for f in referenced)
        config_mount = next(p for p, v in mounts.items() if "configMap" in volumes[v])
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert Path(env["SMSQ_CONFIG"]).parent == Path(config_mount)
    example_keys = set(_by_kind("Secret")["smsq-credentials"]["stringData"])
    assert {Path(f).name for f in referenced} == example_keys
    # smsq's own loader: the only problems are the secret files that exist only in the pod
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, {"REDIS_URL": "redis://redis:6379/0"})
    assert caught.value.problems
    assert all("cannot read secret file" in p for p in caught.value.problems)


# --------------------------------------------------------------------------- KEDA

# The fields of keda.sh/v1alpha1 ScaledObject that these manifests use, as KEDA's CRD
# defines them (spec.scaleTargetRef.name and spec.triggers required; trigger metadata is a
# map of strings; replica counts and intervals are integers).
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "apiVersion": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {"type": "object"},
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "authenticationRef": {"type": "object", "required": ["name"]},
                        },
                    },
                },
            },
        },
    },
}

# KEDA's redis (lists) scaler: listName and listLength required, an address one way or another.
REDIS_TRIGGER_KEYS = {
    "address",
    "addressFromEnv",
    "host",
    "port",
    "hostFromEnv",
    "portFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "enableTLS",
    "unsafeSsl",
    "databaseIndex",
}


def _consumed_queues(deployment: str, declared: set[str]) -> set[str]:
    args = _container(deployment)["args"]
    if "--queues" in args:
        return set(args[args.index("--queues") + 1 :])
    return declared


def _declared_queues(app: Any) -> set[str]:
    return {q for q in app.broker.get_declared_queues() if not q.endswith(".DQ")}


def test_scaled_objects_fields_and_targets() -> None:
    import jsonschema

    scaled = _by_kind("ScaledObject")
    assert set(scaled) == {"worker", "worker-otp"}
    deployments = _by_kind("Deployment")
    for name, obj in scaled.items():
        jsonschema.validate(obj, SCALED_OBJECT_SCHEMA)
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert spec["minReplicaCount"] >= 1  # a worker always runs: delayed messages need one
        assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
        assert "replicas" in deployments[name]["spec"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis"
            meta = trigger["metadata"]
            assert set(meta) <= REDIS_TRIGGER_KEYS, set(meta) - REDIS_TRIGGER_KEYS
            assert {"listName", "listLength"} <= set(meta)
            assert int(meta["listLength"]) > 0
            host, _, port = meta["address"].rpartition(":")
            assert host.endswith(".svc.cluster.local") and int(port) == 6379
            assert host.split(".")[0] in _by_kind("Service")  # the redis Service


def test_scaled_object_list_names_are_the_brokers_real_lists(
    redis_url: str, run_sandboxes: SandboxFactory
) -> None:
    """Messages enqueued through smsq's real broker land in exactly the lists KEDA reads,
    and every queue a scaled Deployment consumes is watched (ready and dispatch delayed)."""
    from tests.support.sandboxes import sandbox_settings
    from worker.core.queues import DISPATCH_OTP_QUEUE, DISPATCH_QUEUE
    from worker.entry.actors import create_app

    sandboxes = run_sandboxes(["intis"])
    settings = sandbox_settings(redis_url, sandboxes)
    app = create_app(settings)
    try:
        declared = _declared_queues(app)
        client = redis.Redis.from_url(redis_url)
        scaled = _by_kind("ScaledObject")
        watched = {
            t["metadata"]["listName"] for obj in scaled.values() for t in obj["spec"]["triggers"]
        }
        for queue in declared:  # every queue, by one of the Deployments that consume it
            assert f"{NAMESPACE}:{queue}" in watched, queue
        for queue in (DISPATCH_QUEUE, DISPATCH_OTP_QUEUE):
            assert f"{NAMESPACE}:{delayed_queue(queue)}" in watched, queue
        for name, obj in scaled.items():
            lists = {t["metadata"]["listName"] for t in obj["spec"]["triggers"]}
            consumed = _consumed_queues(obj["spec"]["scaleTargetRef"]["name"], declared)
            for list_name in lists:
                queue = list_name.removeprefix(f"{NAMESPACE}:")
                base = queue.removesuffix(".DQ")
                assert base in consumed, (name, list_name)
                client.delete(list_name)
                message = _message(app, base)
                if queue.endswith(".DQ"):
                    app.broker.enqueue(message, delay=3_600_000)
                else:
                    app.broker.enqueue(message)
                assert client.llen(list_name) == 1, list_name
                assert client.type(list_name) == b"list"
        client.close()
    finally:
        app.runtime.close()
        app.broker.close()
    assert INTAKE_OTP_QUEUE in declared


def _message(app: Any, queue: str) -> Any:
    """A message for some actor of ``queue`` (its body is never run here)."""
    import dramatiq

    actor = next(
        (a for a in app.broker.actors.values() if a.queue_name == queue),
        next(iter(app.broker.actors.values())),
    )
    return dramatiq.Message(
        queue_name=queue, actor_name=actor.actor_name, args=(), kwargs={}, options={}
    )


# --------------------------------------------------------------------------- image


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text(encoding="utf-8")


def test_dockerfile_is_pinned_slim_non_root_with_smsq_entrypoint() -> None:
    text = _dockerfile()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", b) for b in bases)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r'^ENTRYPOINT \["smsq"\]', text, re.M)
    for setting in ("SMSQ__WEB__HOST=0.0.0.0", "SMSQ__METRICS__HOST=0.0.0.0"):
        assert setting in text
    # the settings the image sets are real settings of smsq's config
    compose = tomllib.loads((DEPLOY / "smsq.compose.toml").read_text(encoding="utf-8"))
    assert "metrics" in compose and "web" in compose


def test_image_builds_and_runs() -> None:
    docker = shutil.which("docker")
    if docker is None or run(docker, "info").returncode != 0:
        pytest.skip("no Docker daemon here: the image build runs only where Docker is available")
    tag = "smsq-test-build:latest"
    build = subprocess.run(
        [docker, "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    result = run(docker, "run", "--rm", tag, "--help")
    assert result.returncode == 0 and "worker" in result.stdout
    user = run(docker, "run", "--rm", "--entrypoint", "id", tag, "-u")
    assert user.stdout.strip() != "0"


def test_rules_and_dashboard_name_only_metrics_smsq_exports() -> None:
    """Every smsq_* / dramatiq_* series in the rules and the dashboard is one that
    worker/core/metrics.py defines (the integration test then sees each return data)."""
    from tests.support.deploy_files import metric_names, recording_rules

    source = (ROOT / "worker" / "core" / "metrics.py").read_text(encoding="utf-8")
    defined = set(re.findall(r"\"((?:smsq|dramatiq)_[a-z0-9_]+)\"", source))
    used: set[str] = set()
    for _title, expr in dashboard_exprs():
        used |= metric_names(expr)
    for rule in alert_rules() + recording_rules():
        used |= metric_names(rule["expr"])
    assert len(used) >= 25
    assert used <= defined, f"not defined in worker/core/metrics.py: {sorted(used - defined)}"
