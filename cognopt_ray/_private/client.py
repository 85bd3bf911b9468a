"""The shared base of the engine clients: call an actor, translate Ray's errors into ours.

Every engine follows the pattern of ``ray.util.queue.Queue`` over ``_QueueActor``: a private actor
class holds the state, a public client wraps its handle and offers sync and async methods.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import ray
from ray import exceptions as rex

from cognopt_ray.errors import CognoptError, EngineUnavailable

_T = TypeVar("_T")
_process_clients: dict[str, Any] = {}
_process_clients_lock = threading.Lock()


def process_client(key: str, factory: Callable[[], _T]) -> _T:
    """One client per process for ``key`` (an engine's actor name), made by ``factory`` on first use.

    Named actor handles stay valid across actor restarts, so the cached client keeps working."""
    with _process_clients_lock:
        if key not in _process_clients:
            _process_clients[key] = factory()
        return _process_clients[key]


#: Default seconds a client waits for an engine call before it reports the engine unavailable.
DEFAULT_CALL_TIMEOUT_S = 120.0


def translate_error(exc: BaseException, engine: str) -> BaseException:
    """Map an exception from ``ray.get`` on an engine call to the package's own error."""
    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if hasattr(exc, "cause") else None
        if isinstance(cause, CognoptError):
            return cause
        if isinstance(cause, BaseException) and not isinstance(cause, rex.RayError):
            return cause
    if isinstance(exc, CognoptError):
        return exc
    if isinstance(exc, (rex.ActorDiedError, rex.ActorUnavailableError, rex.RayActorError)):
        return EngineUnavailable(
            f"the {engine} engine is restarting or down ({type(exc).__name__})",
            hint="retry the call in a few seconds",
        )
    if isinstance(exc, rex.GetTimeoutError):
        return EngineUnavailable(f"the {engine} engine did not answer in time", hint="retry the call")
    return exc


class EngineClient:
    """Wraps a named engine actor handle; subclasses add the engine's methods.

    Args:
        handle: the actor handle.
        engine: the engine's name, used in error messages.
        timeout_s: how long a sync call waits before it raises :class:`EngineUnavailable`.
    """

    engine = "engine"

    def __init__(self, handle: Any, *, timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self._actor = handle
        self._timeout_s = timeout_s

    @property
    def actor(self) -> Any:
        """The underlying Ray actor handle."""
        return self._actor

    def _call(self, method: str, *args: Any, _timeout: float | None = None, **kwargs: Any) -> Any:
        try:
            ref = getattr(self._actor, method).remote(*args, **kwargs)
            return ray.get(ref, timeout=_timeout or self._timeout_s)
        except Exception as e:  # noqa: BLE001 - translated, then re-raised
            raise translate_error(e, self.engine) from None

    async def _acall(self, method: str, *args: Any, _timeout: float | None = None, **kwargs: Any) -> Any:
        try:
            ref = getattr(self._actor, method).remote(*args, **kwargs)
            return await asyncio.wait_for(ref, timeout=_timeout or self._timeout_s)
        except asyncio.TimeoutError:
            raise EngineUnavailable(f"the {self.engine} engine did not answer in time", hint="retry") from None
        except Exception as e:  # noqa: BLE001 - every actor error becomes the package's own
            raise translate_error(e, self.engine) from None
