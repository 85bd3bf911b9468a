"""Object-store use per node, read from each node's raylet.

Ray's state API (``ray.util.state``) needs the dashboard; clusters started without it
(``include_dashboard=False``, as the tests do) still answer the raylet's ``GetNodeStats``, which
is what ``ray memory --stats-only`` reads. When that fails too, the node's configured object-store
capacity from ``ray.nodes()`` is reported with ``used_bytes: None`` and the reason.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

logger = logging.getLogger(__name__)


def object_store_by_node(timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """One entry per alive node: ``node_id``, ``address``, ``capacity_bytes``, ``used_bytes``,
    ``objects``, ``spilled_bytes`` and ``used_fraction`` = used_bytes / capacity_bytes."""
    out: list[dict[str, Any]] = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        entry: dict[str, Any] = {
            "node_id": node["NodeID"],
            "address": node.get("NodeManagerAddress"),
            "capacity_bytes": int(node.get("Resources", {}).get("object_store_memory", 0)),
            "used_bytes": None,
            "objects": None,
        }
        try:
            stats = _node_store_stats(node["NodeManagerAddress"], node["NodeManagerPort"], timeout_s)
            avail = int(stats.object_store_bytes_avail) or entry["capacity_bytes"]
            entry.update(
                used_bytes=int(stats.object_store_bytes_used),
                primary_copy_bytes=int(stats.object_store_bytes_primary_copy),
                objects=int(stats.num_local_objects),
                spilled_bytes=int(stats.spilled_bytes_total),
                capacity_bytes=avail,
            )
        except Exception as e:  # noqa: BLE001 - report what we know, and why the rest is missing
            entry["reason"] = f"raylet stats unavailable: {type(e).__name__}: {e}"
        if entry["used_bytes"] is not None and entry["capacity_bytes"]:
            entry["used_fraction"] = entry["used_bytes"] / entry["capacity_bytes"]
        out.append(entry)
    return out


def _node_store_stats(address: str, port: int, timeout_s: float) -> Any:
    from ray._common.network_utils import build_address
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc

    channel = init_grpc_channel(build_address(address, port))
    try:
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        reply = stub.GetNodeStats(node_manager_pb2.GetNodeStatsRequest(include_memory_info=False), timeout=timeout_s)
        return reply.store_stats
    finally:
        channel.close()
