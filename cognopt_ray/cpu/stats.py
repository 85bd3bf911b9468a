"""Measurements of the CPU engine, what they recommend, and their export to Ray's metrics.

Every figure is computed from counters the scheduler records; the formulas are in the
docstrings below and in ``docs/cpu.md``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cognopt_ray.priority import Priority

#: Upper bounds (seconds) of the wait and run time histogram buckets; the last is +Inf.
BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    k = (len(data) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


class Histogram:
    """Cumulative bucket counts (Prometheus style) plus a window of recent values for percentiles."""

    def __init__(self, keep: int = 4096) -> None:
        self.counts = [0] * len(BUCKETS_S)
        self.total = 0
        self.sum = 0.0
        self.recent: deque[tuple[float, float]] = deque(maxlen=keep)

    def add(self, value: float, now: float) -> None:
        value = max(0.0, value)
        for i, b in enumerate(BUCKETS_S):
            if value <= b:
                self.counts[i] += 1
                break
        self.total += 1
        self.sum += value
        self.recent.append((now, value))

    def window(self, since: float) -> list[float]:
        return [v for t, v in self.recent if t >= since]

    def summary(self, since: float) -> dict[str, Any]:
        """All-time ``count``, ``sum_s``, cumulative ``buckets``; over the window (values recorded at
        or after ``since``, at most the last ``keep``): ``window_count``, cumulative
        ``window_buckets``, percentiles."""
        vals = self.window(since)
        counts = [0] * len(BUCKETS_S)
        for v in vals:
            counts[next(i for i, b in enumerate(BUCKETS_S) if v <= b)] += 1
        return {
            "count": self.total,
            "sum_s": round(self.sum, 6),
            "buckets": _labelled(self._cumulative()),
            "window_count": len(vals),
            "window_buckets": _labelled(_cumulative(counts)),
            "p50_s": _pct(vals, 50),
            "p95_s": _pct(vals, 95),
            "p99_s": _pct(vals, 99),
            "max_s": max(vals) if vals else None,
        }

    def _cumulative(self) -> list[int]:
        return _cumulative(self.counts)


def _cumulative(counts: list[int]) -> list[int]:
    out, acc = [], 0
    for c in counts:
        acc += c
        out.append(acc)
    return out


def _labelled(cumulative: list[int]) -> dict[str, int]:
    return {("+Inf" if math.isinf(b) else f"{b:g}"): c for b, c in zip(BUCKETS_S, cumulative)}


@dataclass
class EngineStats:
    """Counters and samples the scheduler updates as tasks move through it."""

    window_s: float = 60.0
    wait: dict[int, Histogram] = field(default_factory=lambda: {p.value: Histogram() for p in Priority})
    run: dict[int, Histogram] = field(default_factory=lambda: {p.value: Histogram() for p in Priority})
    submitted: int = 0
    withdrawn: int = 0
    calls: int = 0  # Ray calls made (one per pack)
    packed: int = 0  # tasks that shared a Ray call with others
    processed: int = 0
    failed: int = 0
    preempted: int = 0
    rejected: int = 0
    lost: int = 0
    aged: int = 0
    #: (end time, node id, cpu-seconds) of finished cpu-pool tasks.
    work: deque = field(default_factory=lambda: deque(maxlen=100_000))
    #: (time, seconds since the previous sample, cluster cpus, had work) per monitor tick.
    capacity: deque = field(default_factory=lambda: deque(maxlen=100_000))
    #: node id -> deque of (time, cpu_percent) from the node monitors.
    node_load: dict[str, deque] = field(default_factory=dict)
    #: service -> number of admissions refused because of its max_workers cap, with times.
    cap_hits: dict[str, deque] = field(default_factory=dict)

    def _prune(self, samples: deque, now: float) -> None:
        """Drop samples older than the metrics window: memory levels off at one window's worth."""
        since = now - self.window_s
        while samples and samples[0][0] < since:
            samples.popleft()

    def task_finished(self, node: str | None, cpus: float, run_s: float, now: float) -> None:
        if node is not None:
            self.work.append((now, node, max(0.0, run_s) * cpus))
            self._prune(self.work, now)

    def tick(self, now: float, dt: float, cluster_cpus: float, had_work: bool) -> None:
        self.capacity.append((now, dt, cluster_cpus, had_work))
        self._prune(self.capacity, now)

    def node_sample(self, node: str, now: float, cpu_percent: float) -> None:
        self.node_load.setdefault(node, deque(maxlen=4096)).append((now, cpu_percent))

    def cap_hit(self, service: str, now: float) -> None:
        self.cap_hits.setdefault(service, deque(maxlen=4096)).append(now)

    # -- derived figures -------------------------------------------------------------------
    def window_span_s(self, now: float) -> float | None:
        """The real span of the window's work: from the earliest start (end − run time) to the
        latest end of the tasks that ended in the window (as the run histograms keep them);
        ``None`` when none did. It does not grow with uptime."""
        since = now - self.window_s
        spans = [(t - v, t) for h in self.run.values() for t, v in h.recent if t >= since]
        if not spans:
            return None
        return round(max(e for _s, e in spans) - min(s for s, _e in spans), 6)

    def cpu_efficiency(self, now: float) -> float | None:
        """Share of the cluster's CPU time spent running tasks while there was work to do.

        ``cpu_efficiency = sum(run_s_i * num_cpus_i) / sum(dt_k * cluster_cpus_k)`` where ``i`` are
        the cpu-pool tasks that finished in the window and ``k`` the monitor ticks in the window at
        which a task was queued or running. ``None`` when the window held no work. 1.0 means no
        CPU sat idle while a task waited; clipped to [0, 1].
        """
        since = now - self.window_s
        busy = sum(c for t, _n, c in self.work if t >= since)
        avail = sum(dt * cpus for t, dt, cpus, had in self.capacity if t >= since and had)
        if avail <= 0:
            return None
        return round(min(1.0, busy / avail), 4)

    def node_busy_share(self, now: float, node_cpus: dict[str, float]) -> dict[str, float]:
        """Per node: task cpu-seconds in the window / (node cpus * window seconds)."""
        since = now - self.window_s
        busy: dict[str, float] = {n: 0.0 for n in node_cpus}
        for t, n, c in self.work:
            if t >= since and n in busy:
                busy[n] += c
        return {n: round(busy[n] / (cpus * self.window_s), 4) for n, cpus in node_cpus.items() if cpus > 0}

    def load_balance_score(self, now: float, node_cpus: dict[str, float]) -> float | None:
        """How evenly the work spread over the nodes, by capacity.

        ``u_n`` = task cpu-seconds on node ``n`` in the window / cpus of ``n``;
        ``load_balance_score = 1 - stdev(u) / mean(u)`` (coefficient of variation), clipped to
        [0, 1]. 1.0 is perfectly even; ``None`` when no task ran in the window or there are fewer
        than two nodes (a balance needs two).
        """
        since = now - self.window_s
        busy = {n: 0.0 for n, c in node_cpus.items() if c > 0}
        any_work = False
        for t, n, c in self.work:
            if t >= since and n in busy:
                busy[n] += c
                any_work = True
        if not any_work:
            return None
        u = [busy[n] / node_cpus[n] for n in busy]
        if len(u) < 2:
            return None
        mean = sum(u) / len(u)
        sd = math.sqrt(sum((x - mean) ** 2 for x in u) / len(u))
        return round(max(0.0, min(1.0, 1.0 - sd / mean)), 4) if mean > 0 else None

    def node_utilisation(self, now: float) -> dict[str, float | None]:
        """Mean psutil ``cpu_percent`` per node over the window (0..100)."""
        since = now - self.window_s
        out: dict[str, float | None] = {}
        for n, samples in self.node_load.items():
            vals = [v for t, v in samples if t >= since]
            out[n] = round(sum(vals) / len(vals), 2) if vals else None
        return out

    def recommendations(
        self,
        now: float,
        targets: dict[str, float],
        node_cpus: dict[str, float],
        queued_total: int,
        services: dict[str, dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Advice computed from the window's figures; each names the figure that triggered it."""
        since = now - self.window_s
        recs: list[dict[str, Any]] = []
        for p in Priority:
            target = targets.get(p.name.lower())
            p95 = _pct(self.wait[p.value].window(since), 95)
            if target is not None and p95 is not None and p95 > target:
                recs.append(
                    {
                        "kind": "priority_wait",
                        "priority": p.name.lower(),
                        "figure": "wait_p95_s",
                        "value": round(p95, 4),
                        "threshold": target,
                        "message": f"{p.name.lower()} tasks waited {p95:.3g} s at p95 (target {target:g} s): "
                        "add CPUs, lower the priority of bulk work, or mark it preemptible",
                    }
                )
        had_work = any(had for t, _dt, _c, had in self.capacity if t >= since)
        util = self.node_utilisation(now)
        if len(node_cpus) > 1 and had_work:
            for n, u in util.items():
                if n in node_cpus and u is not None and u < 10.0:
                    recs.append(
                        {
                            "kind": "idle_node",
                            "node_id": n,
                            "figure": "cpu_percent_mean",
                            "value": u,
                            "threshold": 10.0,
                            "message": f"node {n[:12]} was {u:.1f}% busy on average while work was pending: "
                            "check its resources or remove it",
                        }
                    )
        for svc, hits in self.cap_hits.items():
            n_hits = sum(1 for t in hits if t >= since)
            if n_hits:
                cap = services.get(svc, {}).get("max_workers")
                recs.append(
                    {
                        "kind": "service_cap",
                        "service": svc,
                        "figure": "admissions_refused_by_max_workers",
                        "value": n_hits,
                        "threshold": 0,
                        "message": f"service {svc!r} hit its max_workers cap ({cap}) {n_hits} times: "
                        "raise max_workers with cpu/optimize-service if it should get more CPU",
                    }
                )
        eff = self.cpu_efficiency(now)
        if eff is not None and eff < 0.5 and queued_total == 0:
            recs.append(
                {
                    "kind": "low_efficiency",
                    "figure": "cpu_efficiency",
                    "value": eff,
                    "threshold": 0.5,
                    "message": f"only {eff:.0%} of the cluster's CPU time ran tasks while work was pending: "
                    "tasks may be I/O bound (use task_type='io') or too short to amortise dispatch",
                }
            )
        return recs


class _RayMetrics:
    """The engine's counters exported through ``ray.util.metrics`` (Ray's Prometheus pipeline)."""

    def __init__(self) -> None:
        try:
            from ray.util.metrics import Gauge

            self._depth = Gauge("cognopt_cpu_queue_depth", "queued tasks per priority", tag_keys=("priority",))
            self._processed = Gauge("cognopt_cpu_tasks_processed", "tasks finished since the scheduler started")
            self._running = Gauge("cognopt_cpu_tasks_running", "tasks handed to Ray and not finished")
        except Exception:  # noqa: BLE001 - metrics are optional
            self._depth = None

    def update(self, depths: dict[int, int], processed: int, running: int) -> None:
        """Set the gauges: queued tasks per priority level, tasks processed, tasks running."""
        if self._depth is None:
            return
        try:
            for p, n in depths.items():
                self._depth.set(n, tags={"priority": Priority(p).name.lower()})
            self._processed.set(processed)
            self._running.set(running)
        except Exception:  # noqa: BLE001 - metrics export must never break the scheduler
            pass
