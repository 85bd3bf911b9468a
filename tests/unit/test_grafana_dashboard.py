"""The Grafana dashboard only charts metrics the code exports, and charts every engine.

The exported names are read from the source: every ``Gauge(...)``, ``Counter(...)`` and
``Histogram(...)`` of ``ray.util.metrics`` whose name is a ``cognopt_*`` string, and the ``GAUGES``
declaration of every module that builds a :class:`cognopt_ray._private.gauges.Gauges` from it. An f-string name
such as ``f"cognopt_network_{n}"`` matches ``cognopt_network_<x>`` when ``<x>`` is a string
literal of the same module (the names it is built from). Ray's Prometheus exporter prefixes
every application metric with ``ray_`` (Counters also get ``_total``, Histograms
``_bucket``/``_sum``/``_count``).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "cluster_configs" / "monitoring" / "grafana-dashboard.json"
ENGINES = ("cpu", "memory", "storage", "network")
SUFFIXES = {"Gauge": ("",), "Counter": ("", "_total"), "Histogram": ("_bucket", "_sum", "_count")}


def _metric_name_arg(call: ast.Call) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == "name":
            return kw.value
    return call.args[0] if call.args else None


def exported_metrics() -> dict[str, set[str]]:
    """``{kind: {names}}`` of the cognopt_* metrics created in cognopt_ray."""
    found: dict[str, set[str]] = {k: set() for k in SUFFIXES}
    for path in (REPO / "cognopt_ray").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            # the declarations of cognopt_ray._private.gauges.Gauges: {"cognopt_x": (description, labels)}
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and str(k.value).startswith("cognopt_") and isinstance(v, ast.Tuple):
                        found["Gauge"].add(k.value)
            elif (
                isinstance(node, ast.DictComp)
                and isinstance(node.key, ast.JoinedStr)
                and isinstance(node.value, ast.Tuple)
            ):
                head = node.key.values[0]
                if isinstance(head, ast.Constant) and str(head.value).startswith("cognopt_"):
                    found["Gauge"].update(_expand_fstring(node.key, node, parents, tree, path))
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            kind = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if kind not in SUFFIXES:
                continue
            arg = _metric_name_arg(node)
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("cognopt_"):
                found[kind].add(arg.value)
            elif isinstance(arg, ast.JoinedStr):
                head = arg.values[0]
                if isinstance(head, ast.Constant) and str(head.value).startswith("cognopt_"):
                    found[kind].update(_expand_fstring(arg, node, parents, tree, path))
        if "Gauges(GAUGES)" in path.read_text():
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            declared = importlib.import_module(module).GAUGES
            assert declared, f"{module}.GAUGES declares no gauge"
            found["Gauge"].update(n for n in declared if n.startswith("cognopt_"))
    return found


def _expand_fstring(name: ast.JoinedStr, call: ast.Call, parents: dict, tree: ast.Module, path: Path) -> set[str]:
    """The names an f-string metric name takes: ``f"cognopt_x_{k}"`` inside ``for k in NAMES``
    (or ``for k, _ in NAMES.items()``) where ``NAMES`` is a literal tuple, list, set or dict."""
    where = f"{path.relative_to(REPO)}:{call.lineno}"
    holes = [v for v in name.values if isinstance(v, ast.FormattedValue)]
    assert len(holes) == 1 and isinstance(holes[0].value, ast.Name), f"metric name too dynamic to check: {where}"
    var = holes[0].value.id
    chain, node = [call], call
    while node in parents:
        node = parents[node]
        chain.append(node)
    for node in chain:
        loops = (
            node.generators
            if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp))
            else ([node] if isinstance(node, ast.For) else [])
        )
        for loop in loops:
            target = loop.target
            first = target.elts[0] if isinstance(target, ast.Tuple) else target
            if isinstance(first, ast.Name) and first.id == var:
                values = _literal_strings(loop.iter, tree)
                assert values, f"cannot resolve the names of the metric at {where}"
                prefix = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in name.values)
                return {prefix.format(v) for v in values}
    raise AssertionError(f"cannot resolve the names of the metric at {where}")


def _literal_strings(expr: ast.expr, tree: ast.Module) -> list[str]:
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr in ("items", "keys"):
        expr = expr.func.value
    if isinstance(expr, ast.Name):  # the nearest literal assigned to that name in the module
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == expr.id for t in node.targets):
                if isinstance(node.value, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                    expr = node.value
                    break
    elts = (
        expr.keys
        if isinstance(expr, ast.Dict)
        else expr.elts
        if isinstance(expr, (ast.Tuple, ast.List, ast.Set))
        else []
    )
    return [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def prometheus_names() -> set[str]:
    names = set()
    for kind, exported in exported_metrics().items():
        for p in exported:
            for suffix in SUFFIXES[kind]:
                names.add("ray_" + p + suffix)
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    out = []
    for panel in doc["panels"]:
        for sub in [panel, *panel.get("panels", [])]:
            for target in sub.get("targets", []):
                out.append((sub["title"], target["expr"]))
    return out


def test_the_code_exports_metrics_of_every_engine():
    names = prometheus_names()
    for engine in ENGINES:
        assert any(n.startswith(f"ray_cognopt_{engine}_") for n in names), f"no cognopt_{engine}_* metric exported"


def test_every_metric_in_the_dashboard_is_exported():
    exported = prometheus_names()
    used = {m for _, expr in dashboard_exprs() for m in re.findall(r"\b(?:ray_)?cognopt_\w+", expr)}
    assert used, "the dashboard charts no cognopt metric"
    unknown = sorted(used - exported)
    assert not unknown, f"metrics the code does not export: {unknown}; exported: {sorted(exported)}"


def test_every_engine_has_a_panel():
    exprs = [expr for _, expr in dashboard_exprs()]
    for engine in ENGINES:
        assert any(f"ray_cognopt_{engine}_" in e for e in exprs), f"no panel for the {engine} engine"


def test_dashboard_is_importable_grafana_json():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] and doc["uid"] and isinstance(doc["schemaVersion"], int)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in doc["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for t in panel.get("targets", []):
            assert t["refId"] and t["expr"]
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


def documented_series() -> dict[str, tuple[str, ...]]:
    """``{series: labels}`` from the table "Every series" of ``docs/metrics.md``."""
    text = (REPO / "docs" / "metrics.md").read_text()
    section = text.split("#### Every series", 1)[1].split("####", 1)[0]
    out = {}
    for m in re.finditer(r"^\| `(ray_cognopt_\w+)` \| ([^|]*) \|", section, re.M):
        out[m.group(1)] = tuple(re.findall(r"`(\w+)`", m.group(2)))
    return out


def test_the_docs_list_every_exported_series_with_the_codes_labels():
    from cognopt_ray.memory.figures import POOL_GAUGES
    from cognopt_ray.network._actor import GAUGES as NETWORK
    from cognopt_ray.storage._actor import GAUGES as STORAGE
    from cognopt_ray.system.prometheus import GAUGES as SYSTEM

    documented = documented_series()
    exported = {"ray_" + n for names in exported_metrics().values() for n in names}
    assert set(documented) == exported, (sorted(set(documented) - exported), sorted(exported - set(documented)))
    labels = {f"cognopt_memory_pool_{k}": ("service",) for k in POOL_GAUGES}
    labels.update({k: t for k, (_d, t) in {**NETWORK, **STORAGE, **SYSTEM}.items()})
    labels.update({"cognopt_cpu_queue_depth": ("priority",), "cognopt_cpu_tasks_processed": ()})
    labels["cognopt_cpu_tasks_running"] = ()
    assert {"ray_" + k: tuple(v) for k, v in labels.items()} == documented
