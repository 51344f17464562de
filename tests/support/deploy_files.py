"""Helpers for the deploy/ tests: paths, YAML, the Prometheus tools, the queries in the files.

The expressions are always parsed out of the rule and dashboard files themselves, so the
checks follow the files and there is no second list to keep in step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "smsq.rules.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "smsq.json"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"
OPERATIONS = ROOT / "docs" / "operations.md"

# Grafana's own variables, given the values Prometheus can evaluate.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
}


def find_tool(name: str) -> str | None:
    """``promtool`` / ``prometheus``: on PATH, else unpacked by `make prometheus-tools`."""
    on_path = shutil.which(name)
    if on_path:
        return on_path
    unpacked = ROOT / ".venv" / "prometheus" / "usr" / "bin" / name
    return str(unpacked) if os.access(unpacked, os.X_OK) else None


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        pytest.skip(
            f"{name} not found: `make prometheus-tools` unpacks Debian's prometheus package "
            "(needs apt-get and dpkg-deb)"
        )
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = load_yaml(RULES)["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "record" in rule]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    return list(dashboard()["panels"])


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables replaced) of every dashboard query."""
    out = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            out.append((panel["title"], expr))
    return out


def split_top_level(expr: str, operators: tuple[str, ...]) -> list[str]:
    """``expr`` split at the binary ``operators`` (words) outside brackets and strings."""
    word = re.compile(r"(" + "|".join(operators) + r")\b")
    parts, depth, start, quote = [], 0, 0, ""
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] == "_")):
            match = word.match(expr, i)
            if match:
                parts.append(expr[start:i])
                start = i = match.end()
                continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts if p.strip()]


THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*-?[0-9.e+]+\s*$")


def alert_operands(expr: str) -> list[str]:
    """The measured parts of an alert: split at top-level and/or/unless, thresholds removed.

    ``X > 1000 and deriv(X[15m]) > 0`` gives ``X`` and ``deriv(X[15m])``; each must return
    data on a running system even while the alert does not fire.
    """
    return [THRESHOLD.sub("", part) for part in split_top_level(expr, ("and", "or", "unless"))]


METRIC_NAME = re.compile(r"(?<![:\w])((?:smsq|dramatiq)_[a-z0-9_]+)(?![:\w])")


def metric_names(expr: str) -> set[str]:
    """smsq_* and dramatiq_* series named in ``expr`` (histogram suffixes removed)."""
    names = set()
    for name in METRIC_NAME.findall(expr):
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        names.add(name)
    return names
