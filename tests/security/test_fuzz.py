"""API fuzzing with schemathesis against the running Serve app, every route, an admin key.

Reproducible and bounded: hypothesis is derandomized (a fixed seed), has no example database and
a fixed example budget per operation (``FUZZ_EXAMPLES``, default 12), so the run stays within a
couple of minutes on 2 cores. Checks: no 5xx (``not_a_server_error``), and every documented
response matches its schema and content type.

Two fields are pinned, because what they would reach is outside the test's machine: outbound
URLs go to a local origin (a random public address would wait on the network), and backup
``source`` / restore ``target`` stay unset (an admin may back up any server folder; a fuzzer
picking ``/`` would back up the machine). Both are covered by hand-written tests.
"""

from __future__ import annotations

import os

import pytest
import requests
from aiohttp import web

#: generous: the first use of an engine starts Ray workers, slow on a busy 2-core machine
pytestmark = pytest.mark.timeout(900)

FUZZ_EXAMPLES = int(os.environ.get("COGNOPT_FUZZ_EXAMPLES", "12"))


def _operations(api_server):
    import schemathesis

    raw = requests.get(f"{api_server.base}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(raw)
    ops = []
    for result in schema.get_all_operations():
        ops.append(result.ok())
    return ops


def _pin(case, origin_url: str) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    path = case.operation.path
    if path.endswith("/network/optimize-request"):
        body["url"] = origin_url
        if "timeout_s" in body:
            body["timeout_s"] = 5
    if path.endswith("/storage/backup"):
        body.pop("source", None)
    if path.endswith("/storage/restore"):
        body.pop("target", None)
    if path.endswith("/cpu/optimize-tasks"):
        body["timeout_s"] = 5


def test_schemathesis_finds_no_server_error_and_no_schema_violation(api_server, origin):
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

    origin.routes["/fuzz"] = lambda request: web.Response(text="ok", headers={"Cache-Control": "max-age=5"})
    origin_url = origin.url("/fuzz")
    headers = api_server.headers("admin")
    failures: list[str] = []
    calls = 0
    for op in _operations(api_server):

        @settings(
            max_examples=FUZZ_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=op.as_strategy())
        def run(case):
            nonlocal calls
            _pin(case, origin_url)
            resp = case.call(base_url=api_server.base, headers=headers, timeout=120)
            calls += 1
            try:
                case.validate_response(
                    resp, checks=[not_a_server_error, response_schema_conformance, content_type_conformance]
                )
            except Exception as e:  # noqa: BLE001 - collected, reported together
                failures.append(
                    f"{op.method.upper()} {op.path}: {resp.status_code} {str(e)[:300]}\n  "  # noqa: B023 - run() is called at once
                    f"{case.as_curl_command()[:400]}"
                )

        run()
    # leave the shared engines as the other tests expect them (the fuzzer may have shrunk the pool)
    requests.post(
        api_server.url("network/optimize-pooling"),
        headers=headers,
        timeout=60,
        json={"limit": 100, "limit_per_host": 20, "keepalive_timeout_s": 30},
    ).raise_for_status()
    assert calls > 0
    assert not failures, "\n".join(failures[:20]) + f"\n({len(failures)} failures in {calls} calls)"
