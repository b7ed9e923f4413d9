"""The monitoring files in deploy/ use only what the bridge exports (issue 17).

- deploy/monitoring/prometheus-rules.yaml: loads as YAML, every expression names only metrics the
  bridge exports (from `bridge.telemetry.Metrics`, with the sample suffixes prometheus_client
  adds) or recording rules of the same file, label matchers only those metrics' labels; with
  `promtool` (on PATH or $PROMTOOL) also `promtool check rules` and the rule unit tests.
- deploy/monitoring/grafana-dashboard.json: loads as JSON, every panel has a query, every query
  names only exported metrics.
- The autoscaling files (HPA Pods metric, prometheus-adapter rule, KEDA query) name an exported gauge.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.telemetry import Metrics

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
METRIC = re.compile(r"\bvoice_bridge_[a-z0-9_]+\b")
RECORDED = re.compile(r"\bvoice_bridge:[a-z0-9_:]+\b")
MATCHERS = re.compile(r"\b(voice_bridge_[a-z0-9_]+)\{([^}]*)\}")
TARGET_LABELS = {"instance", "job", "pod", "namespace", "container", "service"}  # added by the scrape
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def exported() -> dict[str, set[str]]:
    """Every sample name the bridge exports → its label names."""
    names: dict[str, set[str]] = {}
    for collector in list(Metrics().registry._collector_to_names):  # noqa: SLF001 - the registry's own collectors
        for family in collector.describe() or collector.collect():
            labels = set(getattr(collector, "_labelnames", ()))
            for suffix in SUFFIXES.get(family.type, ("",)):
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def check_expression(expr: str, known: dict[str, set[str]], recorded: set[str]) -> list[str]:
    problems = [f"not exported: {name}" for name in METRIC.findall(expr) if name not in known]
    problems += [f"no such recording rule: {name}" for name in RECORDED.findall(expr) if name not in recorded]
    for name, matchers in MATCHERS.findall(expr):
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            if name in known and label not in known[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    return problems


def test_the_exported_names_are_seen() -> None:
    known = exported()
    assert "voice_bridge_tokens_total" in known and known["voice_bridge_tokens_total"] == {"profile", "direction", "modality"}
    assert "voice_bridge_turn_latency_seconds_bucket" in known and "le" in known["voice_bridge_turn_latency_seconds_bucket"]
    assert "voice_bridge_active_calls" in known
    assert check_expression('rate(voice_bridge_tokens_total{modality="audio"}[5m])', known, set()) == []
    assert check_expression("voice_bridge_token_total", known, set()) == ["not exported: voice_bridge_token_total"]
    assert check_expression('voice_bridge_tokens_total{outcome="x"}', known, set()) == ["voice_bridge_tokens_total has no label outcome"]


def test_the_alert_rules_use_only_exported_metrics() -> None:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    # What the issue asks to alert on: turn latency, failures, truncate errors, rate-limit headroom,
    # calls refused busy, event-loop lag.
    assert {
        "VoiceBridgeTurnLatencyHigh",
        "VoiceBridgeResponsesFailing",
        "VoiceBridgeTruncateErrors",
        "VoiceBridgeRateLimitHeadroomLow",
        "VoiceBridgeCallsRejectedBusy",
        "VoiceBridgeEventLoopLag",
    } <= alerts
    known = exported()
    problems = {rule.get("alert") or rule["record"]: check_expression(rule["expr"], known, recorded) for rule in rules}
    assert {name: found for name, found in problems.items() if found} == {}
    for rule in rules:
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def _promtool() -> str | None:
    return os.environ.get("PROMTOOL") or shutil.which("promtool")


@pytest.mark.skipif(_promtool() is None, reason="promtool not installed (apt: prometheus; or set PROMTOOL)")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = _promtool()
    assert promtool is not None
    checked = subprocess.run([promtool, "check", "rules", RULES.name], cwd=MONITORING, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "prometheus-rules.test.yaml"], cwd=MONITORING, capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36 and dashboard["title"] == "voice-bridge"
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels) >= 15
    known = exported()
    problems = {}
    queried = set()
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat") and set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found = check_expression(target["expr"], known, set())
            queried |= set(METRIC.findall(target["expr"]))
            if found:
                problems[panel["title"]] = found
    assert problems == {}
    # The new concerns are on it: tokens, estimated cost, failures, rate limits.
    assert {
        "voice_bridge_tokens_total",
        "voice_bridge_call_cost_estimate_dollars_sum",
        "voice_bridge_response_failures_total",
        "voice_bridge_upstream_rate_limit_remaining",
    } <= queried


def test_autoscaling_uses_the_active_calls_gauge() -> None:
    known = exported()
    hpa = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "hpa.yaml").read_text(encoding="utf-8"))
    kinds = [metric["type"] for metric in hpa["spec"]["metrics"]]
    assert kinds == ["Pods", "Resource"]  # calls per pod first, CPU second
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] in known
    keda = yaml.safe_load((MONITORING / "keda-scaledobject.yaml").read_text(encoding="utf-8"))
    (prometheus,) = [t for t in keda["spec"]["triggers"] if t["type"] == "prometheus"]
    assert check_expression(prometheus["metadata"]["query"], known, set()) == []
    adapter = yaml.safe_load((MONITORING / "prometheus-adapter-values.yaml").read_text(encoding="utf-8"))
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] in known and check_expression(rule["seriesQuery"].strip("'"), known, set()) == []
    monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text(encoding="utf-8"))
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
