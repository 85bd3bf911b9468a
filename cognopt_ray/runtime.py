"""Start or join Ray, and get or create the engine actors.

Every engine makes its named actor through :func:`get_or_create_actor`, so all of them live in
the namespace ``cognopt``, are found again by name from any driver, job or Serve replica, restart
after a crash (``max_restarts=-1``) and, for a server, outlive the process that made them
(``lifetime="detached"``).

Example:
    >>> import cognopt_ray
    >>> cognopt_ray.init(num_cpus=2)          # doctest: +SKIP
    >>> cognopt_ray.init()                    # a second call is harmless  # doctest: +SKIP
    >>> cognopt_ray.shutdown()                # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from cognopt_ray.config import Settings
from cognopt_ray.errors import ConfigError

logger = logging.getLogger(__name__)

NAMESPACE = "cognopt"
#: Ray resources an engine actor asks for: none, so engines never take a CPU slot from tasks.
ENGINE_ACTOR_CPUS = 0


@dataclass
class _RuntimeState:
    settings: Settings | None = None
    detached: bool = False
    started_ray: bool = False
    #: name -> {actor id: handle}: every handle this process got for a named engine, so the one
    #: that created a (non-detached) actor is never dropped (see ``get_or_create_actor``).
    actors: dict[str, dict[Any, Any]] = field(default_factory=dict)


_state = _RuntimeState()
_lock = threading.RLock()
#: Functions ``(settings, runtime_env) -> runtime_env`` applied to the job's runtime_env by :func:`init`.
_runtime_env_hooks: list[Callable[[Settings, Any], Any]] = []


def add_runtime_env_hook(hook: Callable[[Settings, Any], Any]) -> None:
    """Have :func:`init` pass the job's ``runtime_env`` through ``hook(settings, runtime_env)``.

    This is how a package above the runtime reaches every worker of the job without the runtime
    importing it: the memory package adds its GC tuner's ``worker_process_setup_hook`` when it is
    imported (:func:`init` imports it). Adding the same hook twice keeps one.
    """
    with _lock:
        if hook not in _runtime_env_hooks:
            _runtime_env_hooks.append(hook)


def init(
    address: str | None = None,
    settings: Settings | None = None,
    *,
    num_cpus: int | None = None,
    detached: bool | None = None,
    **ray_kwargs: Any,
) -> Settings:
    """Connect to Ray (or start a local one) and remember the settings the engines will use.

    Args:
        address: ``None`` uses ``RAY_ADDRESS`` when set and otherwise starts a new local Ray;
            ``"auto"`` joins the cluster running on this machine; ``"ray://…"`` or ``host:port``
            joins that cluster.
        settings: defaults to :meth:`Settings.load` (YAML file from ``COGNOPT_CONFIG`` and ``COGNOPT_*``).
        num_cpus: CPUs of a newly started local Ray (ignored when joining).
        detached: make engine actors outlive this process (servers want this); defaults to
            ``settings.detached_engines``.
        **ray_kwargs: passed to :func:`ray.init` when Ray is started or joined here.

    Returns:
        The settings in force. Calling ``init`` again is harmless: Ray is not started twice, and
        new settings (if given) replace the old ones for engines created afterwards.
    """
    import cognopt_ray.memory  # noqa: F401 - registers the GC tuner's runtime_env hook (package import is lazy)

    with _lock:
        if settings is None:
            settings = _state.settings or Settings.load()
        _state.settings = settings
        _state.detached = settings.detached_engines if detached is None else detached
        if not ray.is_initialized():
            target = address if address is not None else os.environ.get("RAY_ADDRESS") or "local"
            kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": True, **ray_kwargs}
            for hook in _runtime_env_hooks:  # e.g. the memory engine's GC tuner, in every worker of the job
                env = hook(settings, kwargs.get("runtime_env"))
                if env is not None:
                    kwargs["runtime_env"] = env
            if target == "local":
                if num_cpus is not None:
                    kwargs["num_cpus"] = num_cpus
                _avoid_taken_agent_port()
            elif num_cpus is not None:
                logger.info("num_cpus=%s ignored: joining the cluster at %s", num_cpus, target)
            try:
                ray.init(address=target, **kwargs)
            except ConnectionError as e:
                raise ConfigError(
                    f"cannot reach Ray at {target!r}: {e}",
                    hint="start it with `ray start --head` or leave address unset for a local Ray",
                ) from None
            _state.started_ray = target == "local"
            logger.info("cognopt_ray connected to Ray (%s)", target)
        return settings


def _avoid_taken_agent_port() -> None:
    """Let a new local Ray start while another Ray runs on this machine.

    Ray gives its dashboard agent a fixed HTTP port (52365) and ``ray.init`` has no parameter for
    it; when another Ray on the machine (a server, a notebook, a ``ray start``) holds it, the new
    raylet dies and ``ray.init`` times out ("the node timed out during startup"). When the port
    is taken, the default that ``ray.init`` will use is replaced by a free port.
    """
    import socket

    try:
        from ray._private import parameter, ray_constants

        port = ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
                return  # free: keep Ray's default
            except OSError:
                pass
        with socket.socket() as sock:
            sock.bind(("", 0))
            free = sock.getsockname()[1]
        init = parameter.RayParams.__init__
        names = init.__code__.co_varnames[: init.__code__.co_argcount]
        defaults = list(init.__defaults__ or ())
        idx = names.index("dashboard_agent_listen_port") - (len(names) - len(defaults))
        defaults[idx] = free
        init.__defaults__ = tuple(defaults)
        logger.info("port %s is held by another Ray on this machine; this Ray's agent uses %s", port, free)
    except Exception as e:  # noqa: BLE001 - Ray internals moved: start as Ray would
        logger.debug("could not pick a free agent port: %s", e)


def adopt_in_actor(settings: Settings) -> None:
    """Called by an engine actor with its settings: clients it creates in its own process (one
    engine using another) use the same settings, and engines it creates are detached, since an
    engine must not die with the engine that happened to create it."""
    with _lock:
        _state.settings = settings
        _state.detached = True


def get_settings() -> Settings:
    """The settings in force in this process (loaded from the environment if ``init`` was not called)."""
    with _lock:
        if _state.settings is None:
            _state.settings = Settings.load()
        return _state.settings


def ensure_ray() -> None:
    """Make sure this process is connected to Ray, starting a local one if needed."""
    if not ray.is_initialized():
        init()


def get_or_create_actor(actor_cls: Any, name: str, *args: Any, **options: Any) -> Any:
    """Return the named engine actor in namespace ``cognopt``, creating it if it does not exist.

    Args:
        actor_cls: a class decorated with ``@ray.remote``.
        name: the actor's name (``cognopt.<engine>``).
        *args: constructor arguments, used only when the actor is created here.
        **options: extra ``.options()``; ``max_restarts=-1``, ``num_cpus=0``, the namespace and
            ``lifetime="detached"`` (when this process runs a server) are set unless overridden.
    """
    ensure_ray()
    with _lock:
        opts: dict[str, Any] = {
            "name": name,
            "namespace": NAMESPACE,
            "get_if_exists": True,
            "max_restarts": -1,
            "num_cpus": ENGINE_ACTOR_CPUS,
        }
        if _state.detached or _in_worker():
            # An engine must not die with the process that happened to create it: a Serve replica
            # or a task that is restarted or killed would take a non-detached engine with it.
            opts["lifetime"] = "detached"
        opts.update(options)
        handle = actor_cls.options(**opts).remote(*args)
        # Keep the first handle of each actor: when this call created the actor, that handle is
        # its owner's reference, and Ray frees a non-detached actor once it is gone (handles from
        # a later ``get_if_exists`` lookup do not count). Replacing it with the handle of a second
        # lookup killed shared engines between two calls ("permanently dead", REF_DELETED).
        _state.actors.setdefault(name, {}).setdefault(handle._actor_id, handle)
        return handle


def _in_worker() -> bool:
    """True inside a Ray worker (an actor or a task, e.g. a Serve replica), False in a driver."""
    try:
        return ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    except Exception:  # noqa: BLE001 - outside Ray there is no runtime context: not a worker
        return False


def get_actor(name: str) -> Any | None:
    """The named actor in namespace ``cognopt``, or ``None`` when it does not exist."""
    ensure_ray()
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def list_engine_actors() -> list[str]:
    """Names of the actors that live in namespace ``cognopt``."""
    ensure_ray()
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == NAMESPACE)


def shutdown(*, kill_engines: bool = False) -> None:
    """Disconnect from Ray. Stops Ray only if ``init`` started it here.

    Args:
        kill_engines: also kill the engine actors (their durable state stays on disk).
    """
    with _lock:
        if ray.is_initialized():
            if kill_engines:
                for name in list_engine_actors():
                    actor = get_actor(name)
                    if actor is not None:
                        ray.kill(actor, no_restart=True)
            ray.shutdown()
        _state.actors.clear()
        _state.started_ray = False


__all__ = [
    "NAMESPACE",
    "init",
    "shutdown",
    "get_settings",
    "adopt_in_actor",
    "add_runtime_env_hook",
    "ensure_ray",
    "get_or_create_actor",
    "get_actor",
    "list_engine_actors",
]
