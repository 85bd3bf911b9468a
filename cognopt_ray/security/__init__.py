"""API keys with scopes, and the append-only audit log."""

from cognopt_ray.security.audit import AuditLog
from cognopt_ray.security.keys import KeyStore, Principal, generate_key, hash_secret

__all__ = ["AuditLog", "KeyStore", "Principal", "generate_key", "hash_secret"]
