"""System layer: health now; metrics, optimize-all, cleanup and the report build on it."""

from cognopt_ray.system.health import check_health, check_redis

__all__ = ["check_health", "check_redis"]
