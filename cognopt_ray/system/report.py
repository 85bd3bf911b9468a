"""The savings report: the Before/After table of cores, RAM, storage, bandwidth and monthly cost.

Every row comes from measured counters (the engines' metrics) or from a measured run (the
reference workload, ``benchmarks/workload.py``); the price sheet (``settings.system.prices``)
turns the quantities into money.

Rows and their methods (also in ``docs/metrics.md``):

- **storage**: before = raw bytes of the stored items, after = bytes the tiers store.
- **bandwidth**: before = the wire bytes a plain HTTP client sending the same
  ``Accept-Encoding`` would have received (bytes from origins + the network engine's
  ``bytes_saved``), after = bytes received from origins.
- **RAM**: before = bytes held in pools + the memory engine's ``bytes_shared`` (Σ over live
  allocations of nbytes × (distinct reader processes − reader nodes): the private copies its
  readers would otherwise hold), after = bytes held in pools. The workload measures RAM
  directly instead (USS of the readers plus the object-store copy).
- **cores** (``"kind": "model"``: a simulation, not a run): the fewest CPUs on which the CRITICAL tasks' p99 wait stays under
  ``critical_p99_target_s`` *and* the whole trace finishes no later than it does on the
  cluster it was measured on (same trace, same policy), found by replaying a task trace through a non-preemptive simulator under each policy —
  ``fifo`` (plain Ray: arrival order) before, ``priority`` (cognopt: strict priority, FIFO
  within a level) after. The workload replays the trace it measured (arrival, priority, run
  time of every task). From counters alone, the trace is rebuilt from the tasks that ended in
  the scheduler's metrics window (``window_buckets`` of its run-time histograms per priority,
  each bucket's count at the bucket's geometric midpoint), with the tasks' arrivals spread
  evenly over the real span of that work (``window_span_s``: earliest start to latest end, not
  the window's length), priorities interleaved in proportion. All-time counts are never used,
  so the row does not grow with uptime; ``None`` when no task ended in the window.
  Every other row is ``"kind": "measured"``.
- **monthly cost**: cores × ``vcpu_month`` + RAM GiB × ``ram_gib_month`` + storage GiB ×
  ``storage_gib_month`` + bandwidth GB per month × ``egress_gb``, where bandwidth per month is
  the window's bytes × (30 days ÷ the window).

Example:
    >>> trace = [(0.0, 5, 0.1)] * 4 + [(0.05, 1, 0.01)]
    >>> min_cores(trace, "fifo", target_s=0.2), min_cores(trace, "priority", target_s=0.2)
    (2, 1)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

from cognopt_ray.config import PriceSheet, Settings

GiB = 1024**3
MONTH_S = 30 * 86400.0
#: a task of a trace: (arrival seconds, priority 1..5, run seconds)
Task = tuple[float, int, float]


def _p99(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    data = sorted(values)
    k = (len(data) - 1) * 0.99
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def replay(trace: Sequence[Task], cpus: int, policy: str) -> dict[str, Any]:
    """Run ``trace`` through ``cpus`` non-preemptive servers under ``fifo`` or ``priority``.

    Returns ``{"waits": {priority: [seconds...]}, "makespan_s": ...}`` (time the last task ends).
    """
    if policy not in ("fifo", "priority"):
        raise ValueError(f"policy must be 'fifo' or 'priority', got {policy!r}")
    if cpus < 1:
        raise ValueError("cpus must be >= 1")
    order = sorted(range(len(trace)), key=lambda i: (trace[i][0], i))
    free = [0.0] * cpus  # heap of the times each server becomes free
    heapq.heapify(free)
    queue: list[tuple] = []
    waits: dict[int, list[float]] = {}
    i, n, end = 0, len(order), 0.0
    now = 0.0
    while i < n or queue:
        t_free = heapq.heappop(free)
        now = max(now, t_free)
        if not queue and i < n:
            now = max(now, trace[order[i]][0])
        while i < n and trace[order[i]][0] <= now:
            idx = order[i]
            arr, prio, _run = trace[idx]
            key = (arr, idx) if policy == "fifo" else (prio, arr, idx)
            heapq.heappush(queue, (key, idx))
            i += 1
        _key, idx = heapq.heappop(queue)
        arr, prio, run = trace[idx]
        waits.setdefault(int(prio), []).append(now - arr)
        finish = now + run
        end = max(end, finish)
        heapq.heappush(free, finish)
    return {"waits": waits, "makespan_s": end}


def min_cores(
    trace: Sequence[Task],
    policy: str,
    *,
    target_s: float,
    makespan_s: float | None = None,
    reference_cpus: int | None = None,
    max_cores: int = 256,
) -> int | None:
    """The fewest CPUs on which CRITICAL p99 wait ≤ ``target_s`` and the trace ends in time.

    "In time" is by ``makespan_s`` when given, else (with ``reference_cpus``) no later than the
    same trace under the same policy on ``reference_cpus`` CPUs — the cluster it was measured
    on — so fewer cores never buy latency with throughput. ``None`` when even ``max_cores`` does
    not meet it. Both conditions only improve with more CPUs, so the answer is found by bisection.
    """
    if not trace:
        return None
    if makespan_s is None and reference_cpus:
        makespan_s = replay(trace, reference_cpus, policy)["makespan_s"]

    def ok(c: int) -> bool:
        r = replay(trace, c, policy)
        crit = r["waits"].get(1, [])
        return _p99(crit) <= target_s and (makespan_s is None or r["makespan_s"] <= makespan_s + 1e-9)

    if not ok(max_cores):
        return None
    lo, hi = 1, max_cores
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def trace_from_cpu_metrics(cpu: dict[str, Any], *, span_s: float | None = None) -> list[Task]:
    """Rebuild a task trace from the window of the scheduler's run-time histograms
    (``window_buckets`` over ``window_span_s``; see the module docstring)."""
    from cognopt_ray.priority import Priority

    per_prio: dict[int, list[float]] = {}
    for name, hist in (cpu.get("run_time_s") or {}).items():
        prio = Priority[name.upper()].value
        buckets = hist.get("window_buckets") or {}
        prev_bound, prev_count, runs = 0.0, 0, []
        for bound, cum in buckets.items():
            b = math.inf if bound == "+Inf" else float(bound)
            count = int(cum) - prev_count
            hi = b if math.isfinite(b) else max(prev_bound * 2, 1.0)
            mid = math.sqrt(max(prev_bound, hi / 10) * hi)
            runs.extend([mid] * count)
            prev_bound, prev_count = (b if math.isfinite(b) else prev_bound), int(cum)
        if runs:
            per_prio[prio] = runs
    total = sum(len(v) for v in per_prio.values())
    if not total:
        return []
    span = span_s if span_s is not None else cpu.get("window_span_s")
    if not isinstance(span, (int, float)):
        return []  # no span measured: no trace
    # interleave priorities in proportion, deterministically
    slots: list[tuple[float, int, float]] = []
    for prio, runs in per_prio.items():
        k = len(runs)
        for j, run in enumerate(runs):
            slots.append(((j + 0.5) / k, prio, run))
    slots.sort(key=lambda s: (s[0], s[1]))
    return [(span * n / total, prio, run) for n, (_pos, prio, run) in enumerate(slots)]


# -- the table ---------------------------------------------------------------------------------------
def _row(
    resource: str, unit: str, before: float | None, after: float | None, method: str, kind: str = "measured"
) -> dict[str, Any]:
    red = (1.0 - after / before) if before and after is not None else None
    return {
        "resource": resource,
        "kind": kind,
        "unit": unit,
        "before": before,
        "after": after,
        "reduction": None if red is None else round(red, 4),
        "method": method,
    }


def build_table(
    *,
    cores: tuple[int | None, int | None],
    ram_bytes: tuple[float | None, float | None],
    storage_bytes: tuple[float | None, float | None],
    bandwidth_bytes: tuple[float | None, float | None],
    window_s: float,
    prices: PriceSheet,
    methods: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    kinds: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The report document from before/after quantities (bandwidth over ``window_s``). Each row's
    ``kind`` is ``measured`` unless ``kinds`` says otherwise (``model``: simulated)."""
    m = methods or {}
    k = {"cores": "model", **(kinds or {})}
    per_month = MONTH_S / window_s if window_s > 0 else 0.0

    def gib(x: float | None) -> float | None:
        return None if x is None else x / GiB

    def gb_month(x: float | None) -> float | None:
        return None if x is None else x / 1e9 * per_month

    rows = [
        _row(
            "cores",
            "vCPU",
            *cores,
            m.get("cores", "fewest CPUs meeting the CRITICAL p99 target (trace replay)"),
            k.get("cores", "measured"),
        ),
        _row(
            "ram",
            "GiB",
            gib(ram_bytes[0]),
            gib(ram_bytes[1]),
            m.get("ram", "pool bytes + private copies its readers avoided"),
            k.get("ram", "measured"),
        ),
        _row(
            "storage",
            "GiB",
            gib(storage_bytes[0]),
            gib(storage_bytes[1]),
            m.get("storage", "raw vs stored bytes"),
            k.get("storage", "measured"),
        ),
        _row(
            "bandwidth",
            "GB/month",
            gb_month(bandwidth_bytes[0]),
            gb_month(bandwidth_bytes[1]),
            m.get("bandwidth", "plain-client wire bytes vs bytes from origins, scaled to a month"),
            k.get("bandwidth", "measured"),
        ),
    ]
    unit_price = {
        "cores": prices.vcpu_month,
        "ram": prices.ram_gib_month,
        "storage": prices.storage_gib_month,
        "bandwidth": prices.egress_gb,
    }
    cost_before = cost_after = 0.0
    for r in rows:
        p = unit_price[r["resource"]]
        r["monthly_cost_before"] = None if r["before"] is None else round(r["before"] * p, 4)
        r["monthly_cost_after"] = None if r["after"] is None else round(r["after"] * p, 4)
        if r["before"] is not None and r["after"] is not None:
            cost_before += r["monthly_cost_before"]
            cost_after += r["monthly_cost_after"]
    return {
        "rows": rows,
        "monthly_cost": {
            "currency": prices.currency,
            "before": round(cost_before, 4),
            "after": round(cost_after, 4),
            "reduction": round(1 - cost_after / cost_before, 4) if cost_before else None,
        },
        "window_s": window_s,
        "prices": prices.model_dump(),
        **(extra or {}),
    }


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    cur = report["monthly_cost"]["currency"]
    lines = [
        "| resource | before | after | reduction | monthly cost before | monthly cost after | method |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]

    def f(x: Any, nd: int = 4) -> str:
        if x is None:
            return "n/a"
        return f"{x:.{nd}g}" if isinstance(x, float) else str(x)

    for r in report["rows"]:
        red = "n/a" if r["reduction"] is None else f"{r['reduction']:.1%}"
        lines.append(
            f"| {r['resource']} ({r['unit']}) | {f(r['before'])} | {f(r['after'])} | {red} | "
            f"{f(r['monthly_cost_before'])} {cur} | {f(r['monthly_cost_after'])} {cur} | {r['method']} |"
        )
    mc = report["monthly_cost"]
    red = "n/a" if mc["reduction"] is None else f"{mc['reduction']:.1%}"
    lines.append(
        f"| **total** | | | {red} | **{mc['before']:.2f} {cur}** | **{mc['after']:.2f} {cur}** | price sheet in settings.system.prices |"
    )
    return "\n".join(lines)


def report_from_counters(counters: dict[str, dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """The report from the engines' metrics documents (see the module docstring for each method)."""
    sysset = settings.system
    cpu, mem, sto, net = (counters.get(e) or {} for e in ("cpu", "memory", "storage", "network"))
    trace = trace_from_cpu_metrics(cpu) if "error" not in cpu else []
    target = sysset.critical_p99_target_s
    cluster_cpus = max(1, int(sum(n.get("cpus", 0) for n in cpu.get("nodes") or []) or 1))
    cores = (
        (
            min_cores(trace, "fifo", target_s=target, reference_cpus=cluster_cpus),
            min_cores(trace, "priority", target_s=target, reference_cpus=cluster_cpus),
        )
        if trace
        else (None, None)
    )
    held = shared = None
    pools = (mem.get("pools") or {}) if "error" not in mem else {}
    if any(p.get("allocations") for p in pools.values()):
        held = float(sum(p.get("bytes_used") or 0 for p in pools.values()))
        shared = float(sum(p.get("bytes_shared") or 0 for p in pools.values()))
    ram = (None if held is None or shared is None else held + shared, held)
    storage = (
        (sto.get("raw_bytes"), sto.get("stored_bytes")) if "error" not in sto and sto.get("raw_bytes") else (None, None)
    )
    bandwidth: tuple[float | None, float | None] = (None, None)
    if "error" not in net and net.get("requests") and isinstance(net.get("bytes_saved"), int):
        origin = net.get("bytes_from_origin") or 0
        bandwidth = (origin + net["bytes_saved"], origin)
    window = float(net.get("uptime_s") or sysset.report_window_s)
    return build_table(
        cores=cores,
        ram_bytes=ram,
        storage_bytes=storage,
        bandwidth_bytes=bandwidth,
        window_s=window,
        prices=sysset.prices,
        methods={
            "cores": f"model: replay of the tasks that ended in the scheduler's window "
            f"({len(trace)} tasks over {cpu.get('window_span_s') or 0:.3g} s), fifo vs priority, "
            f"CRITICAL p99 wait <= {target:g} s",
            "ram": "pool bytes held + bytes_shared (nbytes x (reader processes - reader nodes))",
            "storage": "raw bytes vs bytes stored by the tiers",
            "bandwidth": "plain-client wire bytes (from origins + bytes_saved) vs bytes from origins, scaled to a month",
        },
        extra={"source": "counters", "critical_p99_target_s": target},
    )


async def system_report(settings: Settings) -> dict[str, Any]:
    """Read the engines' counters now and build the report."""
    from cognopt_ray.system.metrics import read_counters

    return report_from_counters(await read_counters(), settings)


__all__ = [
    "replay",
    "min_cores",
    "trace_from_cpu_metrics",
    "build_table",
    "to_markdown",
    "report_from_counters",
    "system_report",
    "MONTH_S",
]
