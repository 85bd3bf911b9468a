"""CPU engine routes: ``cpu/optimize-tasks``, ``cpu/tasks/{id}``, ``cpu/metrics``, ``cpu/optimize-service``.

Only *registered* tasks run (``cognopt_ray.cpu.register_task(name, fn)``); a caller names them,
never sends code. An unknown name is 404.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cognopt_ray.config import check_service_name
from cognopt_ray.cpu import NamedTask, PriorityScheduler, UnknownTask
from cognopt_ray.cpu import client as cpu_client
from cognopt_ray.errors import InvalidInput
from cognopt_ray.security import Principal
from serve_apps.http import audit, authorize_service, current_principal, enforce_caps, require_read

router = APIRouter()


def _client() -> PriorityScheduler:
    return cpu_client()


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$",
        description="a task registered with cognopt_ray.cpu.register_task",
    )
    args: list[Any] = Field(default_factory=list, max_length=1000)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    priority: int | str = Field(default="medium", description="1..5 or critical/high/medium/low/background")
    num_cpus: float = Field(default=1, ge=0, le=1024)
    task_type: Literal["cpu", "io"] | None = None
    service_name: str | None = Field(default=None, max_length=63)
    max_retries: int = Field(default=3, ge=0, le=100)

    @field_validator("service_name")
    @classmethod
    def _s(cls, v: str | None) -> str | None:
        return None if v is None else check_service_name(v)


class OptimizeTasksRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskSpec] = Field(min_length=1, max_length=10_000)
    wait: bool = Field(default=True, description="true: answer with results; false: answer with task ids")
    timeout_s: float = Field(default=60, gt=0, le=3600, description="how long wait=true waits")
    service_name: str | None = Field(default=None, max_length=63, description="default service of the tasks")

    @field_validator("service_name")
    @classmethod
    def _s(cls, v: str | None) -> str | None:
        return None if v is None else check_service_name(v)


class TaskStatus(BaseModel):
    id: str
    name: str
    state: Literal["queued", "running", "finished", "failed", "lost", "cancelled"]
    priority: str
    effective_priority: str
    task_type: str
    service: str | None = None
    num_cpus: float
    attempts: int
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    wait_s: float | None = None
    result: Any = None
    error: str | None = None


class OptimizeTasksResponse(BaseModel):
    task_ids: list[str]
    tasks: list[TaskStatus] = Field(default_factory=list, description="filled when wait=true")
    completed: int
    failed: int


def _jsonable(v: Any) -> Any:
    import json

    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return repr(v)


def _status(doc: dict[str, Any]) -> TaskStatus:
    if "result" in doc:
        doc = {**doc, "result": _jsonable(doc["result"])}
    return TaskStatus.model_validate(doc)


@router.post(
    "/cpu/optimize-tasks",
    response_model=OptimizeTasksResponse,
    tags=["cpu"],
    summary="Run registered tasks by name with per-task priority",
)
async def optimize_tasks(
    body: OptimizeTasksRequest, request: Request, principal: Principal = Depends(current_principal)
) -> OptimizeTasksResponse:
    services = {t.service_name or body.service_name for t in body.tasks}
    for svc in services:
        if svc is None:
            if not principal.is_admin:
                raise InvalidInput(
                    "service_name is required for a service key", hint="name the service the tasks belong to"
                )
        else:
            authorize_service(principal, svc, write=True)
    # the client checks each field once (a priority is parsed there into a Priority)
    batch = [
        NamedTask(
            t.name,
            tuple(t.args),
            dict(t.kwargs),
            priority=t.priority,
            num_cpus=t.num_cpus,
            task_type=t.task_type,
            service=t.service_name or body.service_name,
            max_retries=t.max_retries,
        )
        for t in body.tasks
    ]
    client = _client()
    ids = await client.submit_tracked_async(batch)
    docs: list[dict[str, Any]] = []
    if body.wait:
        docs = await client.wait_tracked_async(ids, body.timeout_s)
    statuses = [_status(d) for d in docs]
    return OptimizeTasksResponse(
        task_ids=ids,
        tasks=statuses,
        completed=sum(1 for s in statuses if s.state == "finished"),
        failed=sum(1 for s in statuses if s.state in ("failed", "lost", "cancelled")),
    )


@router.get("/cpu/tasks/{task_id}", response_model=TaskStatus, tags=["cpu"], summary="A task's status and result")
async def get_task(
    task_id: str = Path(..., pattern=r"^[0-9a-f]{16}$"), principal: Principal = Depends(current_principal)
) -> TaskStatus:
    doc = await _client().task_async(task_id)
    svc = doc.get("service")
    visible = principal.can_read() or (svc is not None and principal.can_use_service(svc))
    if not visible:
        # the same answer as for an id that does not exist: a key learns nothing of other services' tasks
        raise UnknownTask(
            f"no task has id {task_id!r}", hint="ids are kept for the last cpu.results_kept tasks submitted over REST"
        )
    return _status(doc)


@router.get("/cpu/metrics", tags=["cpu"], summary="Queue depth and wait times per priority, per-node utilisation")
async def cpu_metrics(principal: Principal = Depends(require_read)) -> dict[str, Any]:
    return await _client().metrics_async()


class CpuServiceParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_workers: int | None = Field(default=None, ge=0, le=1_000_000)
    priority_threshold: int | str | None = None
    pool_kind: Literal["cpu", "io"] | None = None
    cpu_affinity: list[int] | None = Field(default=None, max_length=4096)


class OptimizeServiceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service_name: str = Field(max_length=63)
    optimization_type: Literal["cpu"] = "cpu"
    parameters: CpuServiceParameters

    @field_validator("service_name")
    @classmethod
    def _s(cls, v: str) -> str:
        return check_service_name(v)


class OptimizeServiceResponse(BaseModel):
    service_name: str
    before: dict[str, Any]
    after: dict[str, Any]


@router.post(
    "/cpu/optimize-service",
    response_model=OptimizeServiceResponse,
    tags=["cpu"],
    summary="Set a service's max_workers, priority threshold, pool kind (service keys: within its caps)",
)
async def optimize_service(
    body: OptimizeServiceRequest, request: Request, principal: Principal = Depends(current_principal)
) -> OptimizeServiceResponse:
    authorize_service(principal, body.service_name, write=True)
    changes = body.parameters.model_dump(exclude_none=True)
    if not changes:
        raise InvalidInput(
            "parameters is empty", hint="give max_workers, priority_threshold, pool_kind or cpu_affinity"
        )
    audit(request, "cpu.optimize_service", body.service_name, "denied", **changes)
    enforce_caps(request, principal, body.service_name, "cpu", changes)
    try:
        out = await _client().configure_service_async(body.service_name, **changes)
    except Exception as e:
        audit(request, "cpu.optimize_service", body.service_name, "error", error=type(e).__name__, **changes)
        raise
    audit(request, "cpu.optimize_service", body.service_name, "ok", **changes)
    return OptimizeServiceResponse(**out)
