"""The Grafana dashboard and the Prometheus alert rules under deploy/ (no sockets, no Prometheus, no Grafana).

They are checked against the server itself: every PromQL expression parses (promql-parser, the dev extra), and
every ``infer_*`` series it reads is one that ``src/infer/observability`` exports, read from the metric family
names in its source (``CounterMetricFamily("infer_x"`` exports ``infer_x_total``; a histogram ``_bucket``,
``_sum``, ``_count``). The plain rule file and the PrometheusRule must hold the same rules, and every
``$labels.X`` an annotation uses must survive the rule's aggregation.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads the rule files")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "infer-dashboard.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
RULES = DEPLOY / "prometheus" / "infer-alerts.yaml"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "prometheusrule.yaml"
OBSERVABILITY = ROOT / "src" / "infer" / "observability"
DS_REF = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SEVERITIES = {"critical", "warning", "info"}
NOT_INFER = {"up"}  # series Prometheus makes itself
# Grafana's own variables, each replaced by a value of its kind before parsing
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__interval_ms": "60000",
                    "__range_s": "3600"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_INFER_NAME = re.compile(r"\binfer_[a-z0-9_]+")
_FAMILY = re.compile(r"\b(Counter|Gauge|Histogram|Summary|Info|StateSet|Unknown|Untyped)(?:MetricFamily)?\(\s*"
                     r"(?:name\s*=\s*)?[\"'](infer_[a-z0-9_]+)[\"']")


# ---------------------------------------------------------------------------------------------- what infer exports


def _sample_names(kind: str, name: str) -> set[str]:
    """The series names a metric family of ``kind`` called ``name`` exposes in the text format."""
    kind = kind.lower()
    if kind == "counter":
        return {name.removesuffix("_total") + "_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count"}
    if kind == "info":
        return {f"{name}_info"}
    return {name}


def exported_series() -> dict[str, str]:
    """Series name -> the source file that defines its family, for every ``infer_*`` family in observability/."""
    found: dict[str, str] = {}
    for path in sorted(OBSERVABILITY.rglob("*.py")):
        for m in _FAMILY.finditer(path.read_text(encoding="utf-8")):
            for series in _sample_names(m.group(1), m.group(2)):
                found.setdefault(series, path.name)
    return found


def test_the_source_reader_sees_what_the_collector_exports() -> None:
    """Every family the real collector yields (one version with a state, one deployment with a canary and a
    shadow) is one the source reader found: the reader cannot silently miss a way families are declared."""
    from infer.observability.metrics import DeploymentFigures, LinkFigures, Metrics

    metrics = Metrics()
    metrics.set_state("anomaly", "1", "ACTIVE")
    link = LinkFigures(target="anomaly:1", attempts=3, errors=1, latency_s=0.1, outcomes=2, outcome_sum=1.0)
    metrics.deployments = lambda: [DeploymentFigures(name="d", links=(link,), shadow={"compared": 1},
                                                     canary_stage=0, canary_percent=5.0, canary_status="RUNNING")]
    collected = {s for family in metrics.registry.collect() if family.name.startswith("infer_")
                 for s in _sample_names(family.type, family.name)}
    assert collected, "the collector exported nothing"
    missing = collected - set(exported_series())
    assert not missing, f"exported but not found in the source: {sorted(missing)}"


# ---------------------------------------------------------------------------------------------- PromQL


def _substitute(expr: str, variables: set[str]) -> str:
    """``expr`` with Grafana's variables replaced: builtins by a duration, dashboard variables by ``x`` (they only
    stand inside label matchers). An unknown variable fails the test."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        assert name in variables, f"${name} is not a dashboard variable: {expr}"
        return "x"

    return _VARIABLE.sub(one, expr)


def _parse(expr: str) -> Any:
    promql_parser = pytest.importorskip("promql_parser", reason="promql-parser (the dev extra) parses PromQL")
    try:
        return promql_parser.parse(expr)
    except ValueError as e:
        raise AssertionError(f"does not parse ({e}): {expr}") from e


def _selector_names(tree: Any) -> set[str]:
    """The metric names of every selector in a parsed expression."""
    import promql_parser

    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.MatrixSelector):
            node = node.vector_selector
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            assert name, f"a selector without a metric name: {node}"
            names.add(name)

    promql_parser.walk(tree, visit)
    return names


def _check_names(names: set[str], where: str) -> None:
    exported = exported_series()
    unknown = sorted(n for n in names if n not in exported and n not in NOT_INFER)
    assert not unknown, (f"{where}: series infer does not export (yet?) {unknown}; families in "
                         f"src/infer/observability: {sorted(exported)}")


# ---------------------------------------------------------------------------------------------- the dashboard


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def _dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation query."""
    for panel in _panels(dashboard):
        for t in panel.get("targets", []):
            yield f"panel {panel['id']} ({panel['title']}) {t['refId']}", t["expr"]
    for a in dashboard["annotations"]["list"]:
        if "expr" in a:
            yield f"annotation {a['name']}", a["expr"]


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    d = _dashboard()
    assert d["schemaVersion"] >= 39
    assert d["uid"] and len(d["uid"]) <= 40 and d["title"]
    assert d.get("id") is None, "no numeric id: Grafana assigns one (provisioning and import)"
    variables = _variables(d)
    ds = variables["DS_PROMETHEUS"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for name in ("model", "version"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"] == DS_REF
        assert v["definition"] == v["query"]["query"]
        assert v["definition"].startswith("label_values(infer_model_state") and v["definition"].endswith(
            f", {name})")
    assert 'model=~"$model"' in variables["version"]["definition"]
    assert {o["value"] for o in variables["window"]["options"]} == {"1m", "5m", "1h"}
    assert {o["value"] for o in variables["accuracy_window"]["options"]} == {"5m", "1h", "all"}


def test_every_panel_has_an_id_a_place_a_data_source_and_queries() -> None:
    d = _dashboard()
    panels = list(_panels(d))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    taken: set[tuple[int, int]] = set()
    for p in panels:
        pos = p["gridPos"]
        assert set(pos) == {"h", "w", "x", "y"} and pos["w"] > 0 and pos["h"] > 0, p["title"]
        assert pos["x"] + pos["w"] <= 24, f"{p['title']} is wider than the grid"
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells
        if p["type"] == "row":
            continue
        assert p["title"] and p.get("description"), f"panel {p['id']} has no title or description"
        assert p["datasource"] == DS_REF, p["title"]
        assert p["targets"], f"{p['title']} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS_REF and t["expr"].strip(), p["title"]


def test_every_dashboard_expression_parses_and_reads_exported_series() -> None:
    d = _dashboard()
    variables = set(_variables(d))
    names: set[str] = set()
    for where, expr in _dashboard_exprs(d):
        tree = _parse(_substitute(expr, variables))
        found = _selector_names(tree)
        assert found, f"{where} reads no series"
        assert set(_INFER_NAME.findall(expr)) <= found, where
        names |= found
    for v in _variables(d).values():
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+)(\{.*\})?, *(\w+)\)", v["definition"])
            assert m, v["definition"]
            names.add(m.group(1))
            _parse(_substitute(m.group(1) + (m.group(2) or ""), variables))
    _check_names(names, str(DASHBOARD.relative_to(ROOT)))


def test_the_dashboard_shows_what_issue_11_asks_for() -> None:
    exprs = "\n".join(e for _, e in _dashboard_exprs(_dashboard()))
    wanted = ["infer_model_state", "infer_request_success_total", "infer_request_failure_total",
              "infer_request_duration_seconds_bucket", "infer_window_latency_seconds",
              "infer_queue_duration_seconds_bucket", "infer_compute_duration_seconds_bucket",
              "infer_batch_size_bucket", "infer_window_batch_efficiency", "infer_inflight_requests",
              "infer_queued_requests", "infer_queue_rejected_total", "infer_window_cache_hit_ratio",
              "infer_model_memory_bytes", "infer_gpu_utilization_ratio", "infer_drift_detected",
              "infer_drift_statistic", "infer_drift_p_value", "infer_online_metric",
              "infer_deployment_attempts_total", "infer_deployment_canary_percent",
              "infer_deployment_canary_stage", "infer_deployment_shadow_total"]
    assert [w for w in wanted if w not in set(_INFER_NAME.findall(exprs))] == []
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (model, version, le) (rate(" \
               "infer_request_duration_seconds_bucket" in exprs
    assert 'statistic="psi"' in exprs
    kinds = {p["type"] for p in _panels(_dashboard())}
    assert {"heatmap", "state-timeline", "timeseries", "table", "row"} <= kinds


# ---------------------------------------------------------------------------------------------- the alert rules


def _rule_groups(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert len(docs) == 1, path
    doc = docs[0]
    groups: list[dict[str, Any]] = doc["spec"]["groups"] if doc.get("kind") == "PrometheusRule" else doc["groups"]
    return groups


def _rules() -> list[dict[str, Any]]:
    (group,) = _rule_groups(RULES)
    assert group["name"] == "infer"
    rules: list[dict[str, Any]] = group["rules"]
    return rules


def test_the_prometheus_rule_carries_the_rule_file_s_rules() -> None:
    assert _rule_groups(PROMETHEUS_RULE) == _rule_groups(RULES)
    doc = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert PROMETHEUS_RULE.name in kustomization["resources"]


def test_every_alert_has_a_duration_a_severity_and_annotations() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert set(names) >= {"InferHighP99Latency", "InferHighErrorRatio", "InferModelDegraded", "InferModelError",
                          "InferDriftDetected", "InferOnlineF1Low", "InferQueueRejections", "InferServerDown"}
    for r in rules:
        assert r["expr"].strip() and re.fullmatch(r"(\d+[smhdw])+", r["for"]), r["alert"]
        assert r["labels"]["severity"] in SEVERITIES, r["alert"]
        summary, description = r["annotations"]["summary"], r["annotations"]["description"]
        assert "$labels." in summary and description.strip(), r["alert"]
        for text in (summary, description):
            assert text.count("{{") == text.count("}}"), f"{r['alert']}: unbalanced template"
        if _INFER_NAME.search(r["expr"]):
            assert "$labels.model" in summary, f"{r['alert']}: the summary names the model"


def _result_labels(node: Any) -> set[str] | None:
    """The labels an expression's result keeps, where its aggregations bound them; None: whatever the selected
    series carry."""
    import promql_parser as pq

    if isinstance(node, pq.ParenExpr):
        return _result_labels(node.expr)
    if isinstance(node, pq.AggregateExpr):
        if node.modifier is not None and node.modifier.type == pq.AggModifierType.By:
            return set(node.modifier.labels)
        return None if node.modifier is not None else set()
    if isinstance(node, pq.Call):
        vectors = [a for a in node.args if not isinstance(a, pq.NumberLiteral | pq.StringLiteral)]
        inner = _result_labels(vectors[0]) if vectors else set()
        return inner - {"le"} if inner is not None and node.func.name == "histogram_quantile" else inner
    if isinstance(node, pq.BinaryExpr):
        lhs, rhs = _result_labels(node.lhs), _result_labels(node.rhs)
        if isinstance(node.lhs, pq.NumberLiteral):
            return rhs
        matching = node.modifier.matching if node.modifier is not None else None
        if str(node.op) not in {"and", "or", "unless"} and matching is not None and \
                matching.type == pq.LabelModifierType.Include and not isinstance(node.rhs, pq.NumberLiteral):
            return set(matching.labels)  # one-to-one on(...): only the matching labels stay
        return lhs if lhs is not None or str(node.op) != "or" else rhs
    return None


def test_every_rule_expression_parses_and_keeps_the_labels_it_names() -> None:
    promql_parser = pytest.importorskip("promql_parser", reason="promql-parser (the dev extra) parses PromQL")
    names: set[str] = set()
    for r in _rules():
        tree = _parse(r["expr"])
        names |= _selector_names(tree)
        kept = _result_labels(tree)
        used = {label for text in r["annotations"].values() for label in re.findall(r"\$labels\.(\w+)", text)}
        if kept is not None:
            assert used <= kept, f"{r['alert']}: annotations use {sorted(used - kept)}, the result keeps {kept}"
        promql_parser.parse_duration(r["for"])
    _check_names(names, str(RULES.relative_to(ROOT)))


def test_the_label_check_sees_aggregated_labels() -> None:
    assert _result_labels(_parse("sum by (model) (rate(x[5m])) > 1")) == {"model"}
    assert _result_labels(_parse("histogram_quantile(0.9, sum by (model, le) (rate(x_bucket[5m])))")) == {"model"}
    assert _result_labels(_parse("sum(rate(x[5m])) / sum(rate(y[5m]))")) == set()
    assert _result_labels(_parse("a / on (model) b")) == {"model"}
    assert _result_labels(_parse("sum by (model, version) (a) > 0 and on (model) b")) == {"model", "version"}
    assert _result_labels(_parse("x == 1")) is None


def test_the_rule_file_s_error_ratio_ignores_quiet_models() -> None:
    (rule,) = [r for r in _rules() if r["alert"] == "InferHighErrorRatio"]
    expr = " ".join(rule["expr"].split())
    assert ") > 0.05 and on (model, version)" in expr
    assert re.search(r"\) >= \d+$", expr), "a minimum request count"
    (latency,) = [r for r in _rules() if r["alert"] == "InferHighP99Latency"]
    assert "histogram_quantile(0.99," in latency["expr"] and "[5m]" in latency["expr"]
    assert latency["for"] == "5m"


# ---------------------------------------------------------------------------------------------- provisioning, validator


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder() -> None:
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "infer-prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    monitor = yaml.safe_load((DEPLOY / "kubernetes" / "servicemonitor.yaml").read_text())
    assert source["jsonData"]["timeInterval"] == monitor["spec"]["endpoints"][0]["interval"], \
        "Grafana's $__rate_interval follows the scrape interval"
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "infer-dashboards.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def _validator() -> Any:
    spec = importlib.util.spec_from_file_location("infer_deploy_validate_obs", DEPLOY / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_validator_checks_the_rules_and_the_provisioning(tmp_path: Path) -> None:
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (the dev extra) is not installed")
    v = _validator()
    names = {p.name for p in v.manifest_files(DEPLOY)}
    assert {"infer-alerts.yaml", "prometheusrule.yaml", "infer-prometheus.yaml", "infer-dashboards.yaml"} <= names
    assert v.validate_tree(DEPLOY) == []

    groups = _rule_groups(RULES)
    broken = json.loads(json.dumps(groups))
    broken[0]["rules"][0]["for"] = "5 minutes"
    del broken[0]["rules"][1]["expr"]
    (tmp_path / "infer-alerts.yaml").write_text(yaml.safe_dump({"groups": broken}))
    crd = yaml.safe_load(PROMETHEUS_RULE.read_text())
    crd["spec"]["groups"] = json.loads(json.dumps(groups))
    crd["spec"]["groups"][0]["rules"][2]["severity"] = "critical"  # belongs under labels
    (tmp_path / "rule.yaml").write_text(yaml.safe_dump(crd))
    (tmp_path / "infer-prometheus.yaml").write_text(yaml.safe_dump({"apiVersion": 1, "datasources": [
        {"name": "p", "type": "prometheus", "url": "prometheus:9090"}]}))
    text = "\n".join(v.validate_tree(tmp_path, ["1.29"]))
    assert "groups.0.rules.0.for: '5 minutes' does not match" in text
    assert "'expr' is a required property" in text
    assert "spec.groups.0.rules.2" in text and "'severity' was unexpected" in text
    assert "datasources.0.url: 'prometheus:9090' does not match" in text
