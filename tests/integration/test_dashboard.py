"""``GET /dashboard`` in headless Chromium: enter a key, wait for polls, check each panel by its content.

Chromium is driven through the DevTools protocol over a websocket (aiohttp's client, already a
dependency). The page polls every second (``?interval=1``). The screenshots are kept as test
artefacts in ``$COGNOPT_TEST_ARTIFACTS`` (default ``.test-artifacts/`` at the repository root,
ignored by git).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.support.helpers import free_port, need_binary

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("COGNOPT_TEST_ARTIFACTS", REPO / ".test-artifacts"))


def test_dashboard_page_is_open_and_locked_down(api_server):
    r = requests.get(f"{api_server.base}/dashboard", timeout=30)  # no key needed for the page
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    # no external resources: nothing loaded from another origin (the SVG namespace URI is a name, not a fetch)
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?https?://""", r.text, re.I)
    assert "<link" not in r.text and "@import" not in r.text
    # the data still needs a key
    assert requests.get(api_server.url("system/metrics"), timeout=30).status_code == 401


class DevTools:
    """The few DevTools protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send_json({"id": my_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=60)
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.25)
        raise AssertionError(f"timed out waiting for {expression}; page: {await self.js('document.body.innerText')}")


@pytest.fixture
def chromium(tmp_path):
    """Headless Chromium with its DevTools port (missing Chromium: a skip, a failure under CI=true)."""
    binary = need_binary("chromium", "chromium-browser")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--remote-debugging-port={port}",
            "--remote-debugging-address=127.0.0.1",
            "--window-size=1400,1300",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/json/version", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("chromium did not start its DevTools endpoint") from None
                time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


#: What the test reads from the page: each panel's content, as text and attributes.
READ_PANELS = """(() => {
  const q = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const text = e => e ? e.innerText.trim() : null;
  const panel = name => document.querySelector(`[data-panel="${name}"]`);
  return {
    body: document.body.innerText,
    savings: q('[data-panel="savings"] .tile').map(t => ({figure: t.dataset.figure, title: t.title,
        value: text(t.querySelector('.value'))})),
    engines: q('[data-panel="engines"] tr[data-engine]').map(r => ({name: r.dataset.engine,
        status: r.dataset.status, cells: q('td', r).map(text)})),
    cpu: Object.fromEntries(q('[data-panel="cpu"] tr[data-priority]').map(r => [r.dataset.priority, q('td', r).map(text)])),
    tiers: Object.fromEntries(q('[data-panel="tiers"] tr[data-tier]').map(r => [r.dataset.tier, q('td', r).map(text)])),
    hit: q('[data-panel="hit-rate"] polyline').map(p => ({series: p.dataset.series, points: Number(p.dataset.points),
        coords: p.getAttribute('points').split(' ').length})),
    hitLegend: q('[data-panel="hit-rate"] .legend span').map(text),
    audit: q('[data-panel="audit"] tr[data-action]').map(r => q('td', r).map(text)),
    auditText: text(panel('audit')),
    cpuText: text(panel('cpu')), tiersText: text(panel('tiers')), hitText: text(panel('hit-rate')),
  };
})()"""


async def _page(http, port: int):
    async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as r:
        target = json.loads(await r.text())
    return await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)


async def _login(dt: DevTools, key: str) -> None:
    await dt.js(
        f"document.getElementById('key').value = {json.dumps(key)};"
        "document.getElementById('login').requestSubmit(); true"
    )


async def _shot(dt: DevTools, path: Path) -> int:
    png = base64.b64decode((await dt.call("Page.captureScreenshot", format="png", captureBeyondViewport=True))["data"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return len(png)


async def _drive(port: int, url: str, bad_key: str, admin_key: str, read_key: str, shots: Path) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with await _page(http, port) as ws:
            dt = DevTools(ws)
            await dt.call("Page.enable")
            await dt.call("Page.navigate", url=url)
            await dt.wait_for("document.readyState === 'complete' && !document.getElementById('login').hidden")
            # a wrong key: a clear message, and the form comes back
            await _login(dt, bad_key)
            await dt.wait_for("document.getElementById('message').textContent.includes('401')")
            refused = await dt.js("document.getElementById('message').textContent")
            assert await dt.js("!document.getElementById('login').hidden")
            assert await dt.js("sessionStorage.getItem('cognopt.apiKey')") is None
            # the admin key: every panel, the audit log included
            await _login(dt, admin_key)
            await dt.wait_for("Number(document.body.dataset.polls || 0) >= 4")
            panels = await dt.js(READ_PANELS)
            # what the API said at the same time, to compare null figures with the page
            cpu_doc = await dt.js(
                "fetch('/api/v0/optimization/cpu/metrics', {headers: {Authorization: 'Bearer ' + "
                "sessionStorage.getItem('cognopt.apiKey')}}).then(r => r.json())"
            )
            stored = await dt.js("sessionStorage.getItem('cognopt.apiKey')")
            png = await _shot(dt, shots / "dashboard.png")
            # a read key sees everything but the audit log, and is told why
            await dt.js("document.getElementById('logout').click(); true")
            await _login(dt, read_key)
            await dt.wait_for("document.querySelector('[data-panel=audit]').innerText.includes('403')")
            read_audit = await dt.js("document.querySelector('[data-panel=audit]').innerText")
    return {
        "refused": refused,
        "panels": panels,
        "cpu_doc": cpu_doc,
        "stored": stored,
        "png": png,
        "read_audit": read_audit,
    }


#: The API answers of a cluster where nothing was measured yet (fresh engines): the page's empty state.
#: The session's engines are never this empty, so these answers are served to the page by a fetch
#: stand-in installed before the page's own script runs (the one place this test does not use the API).
EMPTY_API = {
    "system/metrics": {
        "system_overview": {"overall_efficiency": None, "optimization_status": "active", "last_updated": "now"},
        "cpu_optimization": {"cpu_efficiency": None, "load_balance_score": None, "tasks_processed": 0},
        "memory_optimization": {"memory_efficiency": None, "pool_hit_rate": None, "cache_hit_rate": None},
        "storage_optimization": {"compression_ratio": None, "tier_utilization": {}},
        "network_optimization": {"cache_hit_rate": None, "compression_ratio": None, "bandwidth_saved_mb": None},
        "savings": dict.fromkeys(
            [
                "storage_bytes_saved",
                "network_bytes_saved",
                "memory_bytes_shared",
                "origin_requests_avoided",
                "cpu_seconds_run",
                "critical_wait_s_total",
            ]
        ),
    },
    "cpu/metrics": {
        "queue_depth": dict.fromkeys(["critical", "high", "medium", "low", "background"], 0),
        "wait_time_s": {
            p: {"window_count": 0, "p50_s": None, "p99_s": None}
            for p in ["critical", "high", "medium", "low", "background"]
        },
        "tasks_submitted": 0,
        "tasks_processed": 0,
        "running": 0,
        "window_s": 60,
    },
    "storage/metrics": {
        "tiers": {t: {"items": 0, "raw_bytes": 0, "stored_bytes": 0} for t in ["hot", "warm", "cold", "archive"]}
    },
    "health/details": {
        "status": "down",
        "ray": {"status": "up"},
        "engines": {"cpu": {"status": "up"}, "storage": {"status": "down", "reason": "actor not found"}},
        "redis": {"status": "not_configured", "reason": "COGNOPT_REDIS_URL is not set"},
    },
    "system/audit": [],
    "auth/whoami": {"key_id": "stand-in", "scopes": ["admin"]},
}


async def _drive_empty(port: int, url: str, shots: Path) -> dict:
    import aiohttp

    stand_in = (
        "const ANSWERS = " + json.dumps(EMPTY_API) + ";"
        "window.fetch = async (u) => { const path = new URL(u, location.href).pathname.split('/optimization/')[1];"
        "  return new Response(JSON.stringify(ANSWERS[path]), {status: 200, headers: {'content-type': 'application/json'}}); };"
        "sessionStorage.setItem('cognopt.apiKey', 'cok_stand.in-key-00000000');"
    )
    async with aiohttp.ClientSession() as http:
        async with await _page(http, port) as ws:
            dt = DevTools(ws)
            await dt.call("Page.enable")
            await dt.call("Page.addScriptToEvaluateOnNewDocument", source=stand_in)
            await dt.call("Page.navigate", url=url)
            await dt.wait_for("document.readyState === 'complete' && Number(document.body.dataset.polls || 0) >= 2")
            panels = await dt.js(READ_PANELS)
            await _shot(dt, shots / "dashboard-empty.png")
    return panels


BYTES = re.compile(r"^−?\d[\d,.]* (B|KiB|MiB|GiB|TiB)$")
SECONDS = re.compile(r"^\d[\d,.]* (µs|ms|s)$")


def test_dashboard_shows_the_operators_panels_in_chromium(api_server, chromium):
    h = api_server.headers("admin")
    # some activity, so that figures exist: an item on warm, a pool hit, a task, an audited key creation
    r = requests.post(
        api_server.url("storage/store"),
        json={"item_id": "dash-1", "data": {"x": list(range(500))}, "storage_tier": "warm"},
        headers=h,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    alloc = requests.post(
        api_server.url("memory/allocate"), json={"service_name": "ai_models", "data": "d" * 5000}, headers=h, timeout=60
    ).json()
    requests.get(api_server.url(f"memory/allocations/{alloc['allocation_id']}"), headers=h, timeout=60)
    r = requests.post(
        api_server.url("cpu/optimize-tasks"),
        json={"tasks": [{"name": "count_primes", "args": [20000], "priority": "critical"}]},
        headers=h,
        timeout=120,
    )
    assert r.status_code == 200 and r.json()["tasks"][0]["result"] == 2262, r.text
    made = requests.post(api_server.url("auth/keys"), json={"scopes": ["read"], "note": "dash"}, headers=h, timeout=60)
    assert made.status_code in (200, 201), made.text
    shots = ARTIFACTS
    # other tests of the session may have used the read key on the audit log: only the page's own
    # requests count, so the check below reads entries from this moment on
    page_started = datetime.datetime.now(datetime.timezone.utc).isoformat()
    out = asyncio.run(
        _drive(
            chromium,
            f"{api_server.base}/dashboard?interval=1",
            "cok_wrong.key-0000000000",
            api_server.keys["admin"],
            api_server.keys["read"],
            shots,
        )
    )
    assert "refused" in out["refused"]
    assert out["stored"] == api_server.keys["admin"]  # kept for the tab (sessionStorage) only
    p = out["panels"]
    # savings: four figures, each with its unit and its formula on hover
    sav = {t["figure"]: t for t in p["savings"]}
    assert set(sav) == {"storage_bytes_saved", "network_bytes_saved", "origin_requests_avoided", "memory_bytes_shared"}
    for figure in ("storage_bytes_saved", "network_bytes_saved", "memory_bytes_shared"):
        assert BYTES.match(sav[figure]["value"]) or sav[figure]["value"] == "not measured", sav[figure]
    assert BYTES.match(sav["storage_bytes_saved"]["value"]), sav  # items were stored: measured
    assert re.fullmatch(r"[\d,]+ requests?|not measured", sav["origin_requests_avoided"]["value"]), sav
    assert "raw bytes − stored bytes" in sav["storage_bytes_saved"]["title"]
    assert "distinct reader processes − distinct reader nodes" in sav["memory_bytes_shared"]["title"]
    assert "a plain client with the same Accept-Encoding would have received" in sav["network_bytes_saved"]["title"]
    # engines with their status (and a reason when not up)
    engines = {e["name"]: e for e in p["engines"]}
    assert {"ray", "cpu", "memory", "storage", "network", "redis"} <= set(engines), engines
    for e in engines.values():
        assert e["status"] in ("up", "degraded", "down", "not_configured"), e
        assert e["status"] == "up" or e["cells"][2], e  # not up: the reason is shown
    # CPU: queued tasks and waits per priority, null waits shown as not measured (never 0)
    assert list(p["cpu"]) == ["critical", "high", "medium", "low", "background"]
    for prio, cells in p["cpu"].items():
        assert re.fullmatch(r"[\d,]+ tasks?", cells[1]), cells
        w = out["cpu_doc"]["wait_time_s"][prio]
        for cell_text, value in ((cells[2], w["p50_s"]), (cells[3], w["p99_s"])):
            assert (cell_text == "not measured") == (value is None), (prio, cells, w)
            assert value is None or SECONDS.match(cell_text), cells
    assert SECONDS.match(p["cpu"]["critical"][2]), p["cpu"]  # the task above waited in the window
    # bytes per tier, with units
    assert set(p["tiers"]) == {"hot", "warm", "cold", "archive"}
    warm = p["tiers"]["warm"]
    assert re.fullmatch(r"[\d,]+ items?", warm[1]) and warm[1] != "0 items", warm
    assert BYTES.match(warm[2]) and BYTES.match(warm[3]) and warm[4].endswith("%"), warm
    # hit rates sampled by the page: lines of several points, labelled in percent
    drawn = [line for line in p["hit"] if line["points"] >= 3]
    assert drawn, p["hit"]
    assert all(line["coords"] == line["points"] for line in p["hit"])
    assert all(re.search(r"\d %$|not measured$", t) for t in p["hitLegend"]), p["hitLegend"]
    # the recent audit entries, newest first, with the key creation above
    assert any(row[2] == "auth.key_create" and row[4] == "ok" for row in p["audit"]), p["audit"]
    # no constant charted, no unitless tiny numbers
    assert "weights" not in p["body"] and not re.search(r"\de-\d", p["body"]), p["body"]
    assert "403" in out["read_audit"] and "admin" in out["read_audit"]
    # the page asked whoami instead of polling the audit log with the read key (each 403 is audited)
    read_id = api_server.keys["read"][4:].split(".", 1)[0]
    denied = requests.get(
        api_server.url("system/audit"),
        params={"action": "system.read_audit", "key_id": read_id, "since": page_started},
        headers=h,
        timeout=60,
    )
    assert denied.status_code == 200 and denied.json() == [], denied.text
    shot = shots / "dashboard.png"
    assert out["png"] > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # a real picture


def test_dashboard_empty_state_says_not_measured(api_server, chromium):
    p = asyncio.run(_drive_empty(chromium, f"{api_server.base}/dashboard?interval=1", ARTIFACTS))
    assert {t["value"] for t in p["savings"]} == {"not measured"}, p["savings"]  # null is not 0
    assert "No task has been submitted yet" in p["cpuText"]
    assert all(cells[2] == cells[3] == "not measured" and cells[1] == "0 tasks" for cells in p["cpu"].values())
    assert "Nothing stored yet" in p["tiersText"]
    assert "No cache lookups yet" in p["hitText"] and p["hit"] == []
    assert "No audit entries yet" in p["auditText"]
    engines = {e["name"]: e for e in p["engines"]}
    assert engines["storage"]["status"] == "down" and engines["storage"]["cells"][2] == "actor not found"
    assert " 0 B" not in p["body"] and "NaN" not in p["body"] and "undefined" not in p["body"], p["body"]
