"""HTTP cache conformance: the public ``http-cache-tests`` suite (cache-tests.fyi) run through the proxy route.

The script installs ``http-cache-tests`` (npm registry, version :data:`SUITE_VERSION`) into a
temporary folder (and Debian's ``nodejs``/``npm`` with apt when ``node`` is missing), starts the
suite's test server on 127.0.0.1, starts a local Ray (``cognopt_ray.init(num_cpus=2)``) and the
Serve app with that server as the upstream ``suite`` (allowlisted for 127.0.0.1 only, service
``http_suite``, ``default_lifetime`` off), then runs the suite's client with
``<api>/network/proxy/suite`` as its base URL. The client is the suite's own ``cli.mjs`` logic with
one change: every request carries ``X-API-Key`` (a ``service:http_suite`` key), as any client of
the API must; the proxy does not forward it.

Counted (``results``), for our run and for each published reverse proxy / CDN result of the
package's ``results/`` folder, over the tests a non-browser cache runs (``browser_only`` left out):

- ``required_passed`` / ``optimal_passed`` / ``check_passed`` (``check``: "yes" answers) = tests of
  that kind whose result is ``true`` (the suite's JSON), out of ``required_total`` /
  ``optimal_total`` / ``check_total``.
- ``*_passed_display``: the same as cache-tests.fyi shows them, where a test whose dependency
  (``depends_on``) did not pass counts as not passed.
- ``ratios.required_vs_best_proxy`` = our ``required_passed`` ÷ the highest ``required_passed`` of
  the published proxies; ``ratios.optimal_vs_best_proxy`` likewise.

With ``--repeat N`` the suite runs N times against the same API (a fresh test id per run) and the
counts are the median, with their min and max. Failures of required and optimal tests are listed
(test id, message), then, for each published cache, how many required / optimal tests only we
pass and only it passes (and which). ``--id TEST`` runs one test with the suite's request/response dump.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import emit, free_port, parse_args, table

SUITE_VERSION = "0.4.5"
SERVICE = "http_suite"
KINDS = ("required", "optimal", "check")

#: Node helpers written next to the installed package.
_SERVER = """import http from 'http'
const listen = http.Server.prototype.listen
http.Server.prototype.listen = function (port, ...rest) { return listen.call(this, port, '127.0.0.1', ...rest) }
await import(process.argv[2] + '/server/server.mjs')
"""
_CLIENT = """import fetch from 'node-fetch'
const base = process.argv[2]
const { runTests, getResults } = await import(base + '/client/runner.mjs')
const tests = (await import(base + '/tests/index.mjs')).default
const surrogate = (await import(base + '/tests/surrogate-control.mjs')).default
tests.push(surrogate)
const key = process.env.COGNOPT_SUITE_KEY
const keyed = (url, init) => {
  init = Object.assign({}, init || {})
  init.headers = [...(init.headers || []), ['X-API-Key', key]]
  return fetch(url, init)
}
const testId = process.env.COGNOPT_SUITE_ID || ''
let run = tests
if (testId) {
  for (const suite of tests) for (const t of suite.tests) if (t.id === testId) { t.dump = true; run = [{ ...suite, tests: [t] }] }
}
await runTests(run, keyed, false, process.argv[3])
console.log('@@RESULTS@@' + JSON.stringify(getResults()))
"""
_META = """const base = process.argv[2]
const tests = (await import(base + '/tests/index.mjs')).default
const surrogate = (await import(base + '/tests/surrogate-control.mjs')).default
const index = (await import(base + '/results/index.mjs')).default
const out = []
for (const s of [...tests, surrogate]) for (const t of s.tests) {
  out.push({ id: t.id, suite: s.id, kind: t.kind || 'required', depends_on: t.depends_on || [], browser_only: !!t.browser_only })
}
console.log(JSON.stringify({ tests: out, index }))
"""


def _ensure_node() -> str:
    node = shutil.which("node")
    if node and shutil.which("npm"):
        return node
    subprocess.run(["apt-get", "install", "-y", "-q", "nodejs", "npm"], check=True)
    node = shutil.which("node")
    if not node:
        raise SystemExit("node is missing and apt-get could not install nodejs")
    return node


def install_suite(folder: Path) -> Path:
    """``npm install http-cache-tests@SUITE_VERSION`` into ``folder``; returns the package directory."""
    pkg = folder / "node_modules" / "http-cache-tests"
    if not (pkg / "package.json").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(folder), f"http-cache-tests@{SUITE_VERSION}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    version = json.loads((pkg / "package.json").read_text())["version"]
    if version != SUITE_VERSION:
        raise SystemExit(f"installed http-cache-tests {version}, expected {SUITE_VERSION}")
    (folder / "cognopt-server.mjs").write_text(_SERVER)
    (folder / "cognopt-client.mjs").write_text(_CLIENT)
    (folder / "cognopt-meta.mjs").write_text(_META)
    return pkg


def _node(node: str, folder: Path, script: str, *args: str, env: dict | None = None, timeout: float = 900) -> str:
    out = subprocess.run(
        [node, "--no-warnings", str(folder / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=folder,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{script} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def score(tests: list[dict], results: dict) -> dict[str, int]:
    """Pass counts by kind: raw (result is ``true``) and as displayed (dependencies honoured)."""
    by_id = {t["id"]: t for t in tests}
    memo: dict[str, bool] = {}

    def shown(tid: str) -> bool:
        if tid not in memo:
            memo[tid] = False  # a dependency cycle counts as not passed
            t = by_id.get(tid)
            memo[tid] = bool(t) and results.get(tid) is True and all(shown(d) for d in t["depends_on"] if d in by_id)
        return memo[tid]

    out: dict[str, int] = {}
    for kind in KINDS:
        mine = [t for t in tests if t["kind"] == kind]
        out[f"{kind}_total"] = len(mine)
        out[f"{kind}_passed"] = sum(1 for t in mine if results.get(t["id"]) is True)
        out[f"{kind}_passed_display"] = sum(1 for t in mine if shown(t["id"]))
    return out


def _start_api(upstream: str, root: Path) -> tuple[str, str]:
    from ray import serve

    import cognopt_ray
    from cognopt_ray.config import Settings
    from cognopt_ray.security.keys import generate_key
    from serve_apps.optimization_api import app_builder

    key, rec = generate_key([f"service:{SERVICE}"], note="http conformance benchmark")
    overrides = {
        "storage_root": str(root),
        "api_keys": [rec.model_dump(mode="json")],
        "network": {"allowlist": ["127.0.0.1"], "upstreams": {"suite": {"url": upstream, "service": SERVICE}}},
        "storage": {"progress": False, "min_free_bytes": 0},
    }
    cognopt_ray.init(settings=Settings.load(**overrides), num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_builder({"settings": overrides}), name="cognopt-conformance", route_prefix="/")
    return f"http://127.0.0.1:{port}/api/v0/optimization", key


def _wait_up(url: str, headers: dict, timeout: float = 300) -> None:
    import requests

    deadline = time.time() + timeout
    while True:
        try:
            if requests.get(url, headers=headers, timeout=60).status_code < 500:
                return
        except requests.RequestException:
            pass
        if time.time() > deadline:
            raise SystemExit(f"{url} did not come up within {timeout:g} s")
        time.sleep(1)


def main() -> None:
    args = parse_args(
        "http_conformance",
        __doc__.splitlines()[0],
        [
            ("--repeat", {"type": int, "default": 1, "help": "runs of the suite against the same API (median)"}),
            ("--id", {"default": "", "help": "run one test with the suite's request/response dump"}),
            ("--suite-dir", {"default": "", "help": "install (or reuse) the suite here instead of a temp folder"}),
        ],
    )
    node = _ensure_node()
    work = Path(tempfile.mkdtemp(prefix="cognopt-conformance-"))
    folder = Path(args.suite_dir) if args.suite_dir else work / "suite"
    folder.mkdir(parents=True, exist_ok=True)
    pkg = install_suite(folder)
    meta = json.loads(_node(node, folder, "cognopt-meta.mjs", str(pkg)))
    tests = [t for t in meta["tests"] if not t["browser_only"]]
    sport = free_port()
    server = subprocess.Popen(
        [node, "--no-warnings", str(folder / "cognopt-server.mjs"), str(pkg)],
        cwd=work,
        env={
            **os.environ,
            "npm_config_port": str(sport),
            "npm_config_protocol": "http",
            "npm_config_pidfile": str(work / "server.pid"),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from ray import serve

    import cognopt_ray

    runs: list[dict] = []
    seconds: list[float] = []
    try:
        api, key = _start_api(f"http://127.0.0.1:{sport}", work / "root")
        base = f"{api}/network/proxy/suite"
        _wait_up(f"{base}/state/none", {"X-API-Key": key})
        for _ in range(1 if args.id else max(1, args.repeat)):
            t0 = time.perf_counter()
            out = _node(
                node,
                folder,
                "cognopt-client.mjs",
                str(pkg),
                base,
                env={"COGNOPT_SUITE_KEY": key, "COGNOPT_SUITE_ID": args.id},
            )
            if args.id:
                print(out.split("@@RESULTS@@")[0])
            runs.append(json.loads(out.split("@@RESULTS@@", 1)[1]))
            seconds.append(time.perf_counter() - t0)
            print(f"suite run {len(runs)}: {seconds[-1]:.1f} s", flush=True)
    finally:
        try:
            serve.shutdown()
            cognopt_ray.shutdown(kill_engines=True)
        finally:
            server.terminate()
            server.wait(10)
    if args.id:
        print(json.dumps(runs[0], indent=1))
        return
    scores = [score(tests, r) for r in runs]
    ours = {k: statistics.median(s[k] for s in scores) for k in scores[0]}
    spread = {k: [min(s[k] for s in scores), max(s[k] for s in scores)] for k in scores[0] if "passed" in k}
    published, raw = {}, {}
    for item in meta["index"]:
        if item.get("type") in ("rev-proxy", "cdn"):
            res = json.loads((pkg / "results" / item["file"]).read_text())
            published[item["name"]] = {"version": item.get("version"), **score(tests, res)}
            raw[item["name"]] = res
    kinds = {t["id"]: t["kind"] for t in tests}
    last = runs[-1]
    failures = sorted(
        (kinds[t], t, r[1] if isinstance(r, list) and len(r) > 1 else str(r))
        for t, r in last.items()
        if t in kinds and kinds[t] != "check" and r is not True
    )
    for kind, tid, why in failures:
        print(f"{kind:9s} {tid}: {str(why)[:160]}")
    print()
    # where each published cache and we differ (required and optimal tests, raw results)
    diff_rows = []
    for name, res in raw.items():
        for kind in ("required", "optimal"):
            ids = [t["id"] for t in tests if t["kind"] == kind]
            only_us = sorted(t for t in ids if last.get(t) is True and res.get(t) is not True)
            only_them = sorted(t for t in ids if res.get(t) is True and last.get(t) is not True)
            published[name][f"{kind}_only_us"] = only_us
            published[name][f"{kind}_only_them"] = only_them
            diff_rows.append((name, kind, len(only_us), len(only_them), " ".join(only_them)))
    print(table(diff_rows, ("cache", "kind", "we pass, it fails", "it passes, we fail", "tests it passes and we fail")))
    print()
    best_req = max(p["required_passed"] for p in published.values())
    best_opt = max(p["optimal_passed"] for p in published.values())
    rows = [("cognopt (this run)", "-", *(ours[f"{k}_passed"] for k in KINDS), ours["required_passed_display"])]
    rows += [
        (name, p["version"], *(p[f"{k}_passed"] for k in KINDS), p["required_passed_display"])
        for name, p in sorted(published.items(), key=lambda kv: -kv[1]["required_passed"])
    ]
    results = {
        **ours,
        "spread": spread,
        "runs": len(runs),
        "suite_seconds": [round(x, 1) for x in seconds],
        "suite_version": SUITE_VERSION,
        "published": published,
        "failures": [{"kind": k, "id": t, "message": str(w)[:300]} for k, t, w in failures],
    }
    ratios = {
        "required_vs_best_proxy": ours["required_passed"] / best_req,
        "optimal_vs_best_proxy": ours["optimal_passed"] / best_opt,
    }
    header = ("cache", "version", "required", "optimal", "check yes", "required (as displayed)")
    emit("http_conformance", args.quick, results, ratios, rows, header)


if __name__ == "__main__":
    main()
