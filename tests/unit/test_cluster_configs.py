"""Cluster configs validated offline: launcher YAMLs against Ray's own schema, Serve configs
against ray.serve.schema, KubeRay manifests for the fields the operator requires."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "cluster_configs"
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


@pytest.mark.parametrize("name", ["local.yaml", "aws.yaml"])
def test_launcher_configs_match_rays_schema(name):
    cfg = yaml.safe_load((CONFIGS / name).read_text())
    jsonschema.validate(cfg, json.loads(RAY_SCHEMA.read_text()))
    assert any("pip install" in c for c in cfg["setup_commands"]), "setup must install the package"
    head_cmds = " ".join(cfg["head_start_ray_commands"])
    assert "ray start --head" in head_cmds and "serve deploy serve_apps/serve_config.yaml" in head_cmds
    assert "RAY_AUTH_MODE=token" in head_cmds  # Ray 2.60: token auth for `ray start`
    if cfg["provider"]["type"] != "local":
        assert cfg["head_node_type"] in cfg["available_node_types"]
        assert len(cfg["available_node_types"]) >= 2


def test_aws_redis_has_a_password_and_protected_mode():
    cfg = yaml.safe_load((CONFIGS / "aws.yaml").read_text())
    setup = " ".join(cfg["head_setup_commands"])
    assert "requirepass" in setup and "protected-mode yes" in setup and "protected-mode no" not in setup
    # the password comes from a file copied to every node, never written in the config itself
    secret_file = "/home/ubuntu/.cognopt/redis_password"
    assert secret_file in cfg["file_mounts"]
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if "COGNOPT_REDIS_URL=" in cmd:
            assert f"redis://:$(cat {secret_file})@" in cmd, cmd
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd, cmd


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def _check_token_auth(spec: dict) -> None:
    """Every Ray container runs with token auth, the token and the Redis password from Secrets."""
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        for c in group["template"]["spec"]["containers"]:
            env = _env(c)
            assert env["RAY_AUTH_MODE"]["value"] == "token", c["name"]
            assert "value" not in env["RAY_AUTH_TOKEN"] and env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
            assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
            assert env["COGNOPT_REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@")
            names = list(env)
            assert names.index("REDIS_PASSWORD") < names.index("COGNOPT_REDIS_URL")  # $(VAR) needs it defined first


def _serve_schema(doc: dict):
    from ray.serve.schema import ServeDeploySchema

    return (
        ServeDeploySchema.parse_obj(doc)
        if hasattr(ServeDeploySchema, "parse_obj")
        else ServeDeploySchema.model_validate(doc)
    )


def test_serve_config_is_valid_and_importable():
    doc = yaml.safe_load((REPO / "serve_apps" / "serve_config.yaml").read_text())
    schema = _serve_schema(doc)
    app = schema.applications[0]
    module, attr = app.import_path.split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert app.route_prefix == "/"


def _check_pod_template(template: dict) -> None:
    containers = template["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image", "").startswith("rayproject/ray:") for c in containers)


def _check_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams values must be strings"
    _check_pod_template(head["template"])
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        _check_pod_template(group["template"])


def test_kuberay_raycluster():
    doc = yaml.safe_load((CONFIGS / "kuberay" / "raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    assert doc["spec"]["rayVersion"] == ray.__version__
    _check_cluster_spec(doc["spec"])
    _check_token_auth(doc["spec"])


def test_kuberay_rayservice_is_generated_from_the_serve_config():
    doc = yaml.safe_load((CONFIGS / "kuberay" / "rayservice.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService" and doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"]["rayClusterConfig"])
    _check_token_auth(doc["spec"]["rayClusterConfig"])
    serve_cfg = yaml.safe_load(doc["spec"]["serveConfigV2"])
    _serve_schema(serve_cfg)
    source = yaml.safe_load((REPO / "serve_apps" / "serve_config.yaml").read_text())
    assert [a["import_path"] for a in serve_cfg["applications"]] == [a["import_path"] for a in source["applications"]]
    cluster = yaml.safe_load((CONFIGS / "kuberay" / "raycluster.yaml").read_text())
    assert doc["spec"]["rayClusterConfig"] == cluster["spec"]
    # and the file is exactly what the generator writes now
    r = subprocess.run(
        [sys.executable, str(CONFIGS / "kuberay" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_prometheus_uses_rays_service_discovery_file():
    doc = yaml.safe_load((CONFIGS / "monitoring" / "prometheus.yml").read_text())
    files = [f for job in doc["scrape_configs"] for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert "/tmp/ray/prom_metrics_service_discovery.json" in files
