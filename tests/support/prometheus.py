"""A real Prometheus (Debian's ``prometheus`` binary) on a free port of 127.0.0.1, for one test.

It runs the repository's scrape config (``cluster_configs/monitoring/prometheus.yml``) with two
changes a test needs: the service-discovery file is one written here, in the format Ray writes
(``[{"labels": {...}, "targets": ["host:port"]}]``), naming the test's Ray node (Ray's own file
under ``/tmp/ray`` belongs to whichever Ray started last on the machine), and the scrape and
refresh intervals are 1 s instead of 15 s / 30 s.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.support.helpers import free_port, need_binary

REPO = Path(__file__).resolve().parents[2]
SCRAPE_CONFIG = REPO / "cluster_configs" / "monitoring" / "prometheus.yml"


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.binary = need_binary("prometheus")
        self.workdir = workdir
        self.port = free_port()
        self.targets = targets
        self.proc: subprocess.Popen | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        cfg = yaml.safe_load(SCRAPE_CONFIG.read_text())
        cfg["global"]["scrape_interval"] = "1s"
        cfg["global"]["evaluation_interval"] = "1s"
        sd = self.workdir / "prom_metrics_service_discovery.json"
        sd.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": self.targets}]))
        (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "ray"]
        (sd_config,) = job["file_sd_configs"]
        assert sd_config["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"], sd_config
        sd_config["files"], sd_config["refresh_interval"] = [str(sd)], "1s"
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def start(self) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._config()
        self.log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.base}/-/ready", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError("prometheus did not become ready")

    def api(self, path: str, **params: Any) -> Any:
        r = requests.get(f"{self.base}/api/v1/{path}", params=params, timeout=30)
        r.raise_for_status()
        doc = r.json()
        assert doc["status"] == "success", doc
        return doc["data"]

    def series(self, match: str) -> list[dict[str, str]]:
        return self.api("series", **{"match[]": match})

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def targets_up(self) -> list[dict[str, Any]]:
        return [t for t in self.api("targets")["activeTargets"] if t["health"] == "up"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "log", None):
            self.log.close()
