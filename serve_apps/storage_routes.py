"""Storage routes: store, retrieve, delete, items, explain, backup, snapshots, restore, check, prune,
repair, optimize-tiering, metrics, optimize-service. HTTP translation only; the engine does the work."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

import pyarrow as pa
import pyarrow.ipc as ipc
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from cognopt_ray.errors import Forbidden, InvalidInput
from cognopt_ray.security import Principal
from cognopt_ray.storage import DEFAULT_SERVICE, ItemInfo, StorageClient, client
from cognopt_ray.storage.access import Caller
from cognopt_ray.storage.models import check_service as _check_service
from serve_apps.http import audit, authorize_service, context, current_principal, require_admin, require_read

router = APIRouter(tags=["storage"])

ARROW_STREAM = "application/vnd.apache.arrow.stream"
ITEM_PATH = Path(..., min_length=1, max_length=300, description="item id: 1-200 of A-Z a-z 0-9 . _ - : @ +")


def _client() -> StorageClient:
    """This process's storage client (one per process, see :func:`cognopt_ray.storage.client`)."""
    return client()


def _caller(principal: Principal) -> Caller:
    """Who the engine checks ownership and visibility for (the engine decides, not this layer)."""
    return Caller.from_principal(principal)


# -- models ------------------------------------------------------------------------------------------
class StoreRequest(BaseModel):
    item_id: str = Field(..., max_length=300, examples=["model-weights-v1"])
    data: Any = Field(..., description="any JSON value, or base64 text with encoding='base64'")
    encoding: Literal["json", "base64"] = "json"
    storage_tier: str | None = Field(None, description="hot, warm, cold or archive (default: the service's)")
    compression_type: str | None = Field(None, description="auto, none, zlib, gzip, bz2, lzma, zstd, lz4")
    compression_level: int | None = None
    service_name: str = DEFAULT_SERVICE


class DeleteResponse(BaseModel):
    item_id: str
    deleted: bool
    freed_bytes: int


class BackupRequest(BaseModel):
    source: str | None = Field(None, description="folder or pyarrow.fs URI; default: the store itself")
    tag: str | None = Field(None, max_length=100)


class RestoreRequest(BaseModel):
    snapshot_id: str = Field(..., max_length=64, description="an id from GET storage/snapshots, or 'latest'")
    item_ids: list[str] | None = Field(None, max_length=100_000)
    target: str | None = Field(None, description="a folder to restore into; default: back into the store")


class TieringRequest(BaseModel):
    dry_run: bool = False


class CheckRequest(BaseModel):
    read_data: bool | float = Field(False, description="true, false, or the fraction of packs to read")
    repair: bool = Field(False, description="drop damaged chunks so that the next backup writes them again")


class PruneRequest(BaseModel):
    keep_last: int | None = Field(None, ge=0)
    keep_daily: int | None = Field(None, ge=0)
    keep_weekly: int | None = Field(None, ge=0)


class OptimizeServiceRequest(BaseModel):
    service_name: str
    optimization_type: str | None = Field(None, description="informational, e.g. 'storage'")
    parameters: dict[str, Any] = Field(default_factory=dict, examples=[{"default_tier": "cold", "codec": "zstd"}])


# -- store / retrieve ---------------------------------------------------------------------------------
@router.post(
    "/storage/store",
    response_model=ItemInfo,
    status_code=201,
    summary="Store an item",
    description="JSON body (`data` any JSON value, or base64 with `encoding: base64`), or a raw "
    "`application/octet-stream` body, or an Arrow IPC stream (`application/vnd.apache.arrow.stream`) for "
    "tables; for raw bodies pass item_id, storage_tier, compression_type and service_name as query parameters.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": StoreRequest.model_json_schema()},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def store(
    request: Request,
    item_id: str | None = Query(None, max_length=300),
    storage_tier: str | None = Query(None),
    compression_type: str | None = Query(None),
    compression_level: int | None = Query(None),
    service_name: str = Query(DEFAULT_SERVICE),
    principal: Principal = Depends(current_principal),
) -> Any:
    ctype = (request.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
    if ctype in ("application/octet-stream", ARROW_STREAM):
        if not item_id:
            raise InvalidInput(
                "item_id query parameter is required for raw uploads", hint="POST storage/store?item_id=..."
            )
        # authorised before the body is read or parsed
        _check_service(service_name)
        authorize_service(principal, service_name, write=True)
        body = await request.body()
        data: Any = body
        if ctype == ARROW_STREAM:
            from cognopt_ray.storage.ipc_guard import read_table

            data = read_table(body, context(request).settings.max_body_bytes)
        req = StoreRequest(
            item_id=item_id,
            data=None,
            storage_tier=storage_tier,
            compression_type=compression_type,
            compression_level=compression_level,
            service_name=service_name,
        )
    elif ctype == "application/json":
        try:
            req = StoreRequest.model_validate(json.loads(await request.body()))
        except json.JSONDecodeError as e:
            raise InvalidInput(f"body is not valid JSON: {e}") from None
        except ValueError as e:
            raise InvalidInput(f"invalid store request: {e}") from None
        except RecursionError:
            raise InvalidInput("body is nested too deeply", hint="send a flatter JSON document") from None
        data = req.data
        if req.encoding == "base64":
            if not isinstance(data, str):
                raise InvalidInput("data must be a base64 string when encoding is 'base64'")
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput("data is not valid base64") from None
    else:
        raise InvalidInput(
            f"unsupported content type {ctype!r}",
            hint=f"send application/json, application/octet-stream or {ARROW_STREAM}",
        )
    _check_service(req.service_name)
    authorize_service(principal, req.service_name, write=True)
    try:
        rec = await _client().put_async(
            req.item_id,
            data,
            service=req.service_name,
            tier=req.storage_tier,
            codec=req.compression_type,
            level=req.compression_level,
            caller=_caller(principal),
        )
    except Forbidden as e:
        audit(request, "storage.store", req.item_id[:300], "denied", service=req.service_name, error=e.message[:200])
        raise
    if rec.get("previous_service"):
        audit(
            request,
            "storage.overwrite",
            req.item_id,
            "ok",
            service=req.service_name,
            previous_service=rec["previous_service"],
        )
    return rec


@router.get(
    "/storage/retrieve/{item_id}",
    summary="Read an item (checksum verified)",
    description="Bytes items stream as application/octet-stream, JSON items as JSON, tables as an Arrow IPC "
    "stream (or JSON rows with ?format=json). `columns` projects table columns.",
)
async def retrieve(
    item_id: str = ITEM_PATH,
    columns: list[str] | None = Query(None),
    format: Literal["auto", "arrow", "json"] = Query("auto"),
    principal: Principal = Depends(current_principal),
) -> Response:
    info, value = await _client().retrieve_async(item_id, columns=columns, caller=_caller(principal))
    headers = {"X-Cognopt-Tier": info["tier"], "X-Cognopt-Codec": info["codec"], "X-Cognopt-Checksum": info["checksum"]}
    if info["kind"] == "json":
        return JSONResponse(value, headers=headers)
    if info["kind"] == "table":
        if format == "json":
            return JSONResponse(value.to_pylist(), headers=headers)
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, value.schema) as w:
            w.write_table(value)
        buf = sink.getvalue()
        return StreamingResponse(_slices(memoryview(buf)), media_type=ARROW_STREAM, headers=headers)
    return StreamingResponse(
        _slices(memoryview(value)),
        media_type="application/octet-stream",
        headers={**headers, "Content-Length": str(len(value))},
    )


def _slices(mv: memoryview, size: int = 1 << 20):
    for i in range(0, len(mv), size):
        yield bytes(mv[i : i + size])


@router.delete("/storage/items/{item_id}", response_model=DeleteResponse, summary="Delete an item")
async def delete_item(
    request: Request, item_id: str = ITEM_PATH, principal: Principal = Depends(current_principal)
) -> Any:
    out = await _client().delete_async(item_id, caller=_caller(principal))
    audit(request, "storage.delete", item_id, "ok", service=out.get("service"))
    return out


@router.get("/storage/items", response_model=list[ItemInfo], summary="List items (read)")
async def list_items(
    service: str | None = Query(None, max_length=63),
    tier: str | None = Query(None),
    limit: int = Query(1000, ge=1, le=100_000),
    principal: Principal = Depends(require_read),
) -> Any:
    return await _client().list_items_async(service, tier, limit)


@router.get("/storage/items/{item_id}", response_model=ItemInfo, summary="An item's catalog record")
async def item_info(item_id: str = ITEM_PATH, principal: Principal = Depends(current_principal)) -> Any:
    return await _client().info_async(item_id, caller=_caller(principal))


@router.get("/storage/explain/{item_id}", summary="Why an item has its tier and codec")
async def explain(item_id: str = ITEM_PATH, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return await _client().explain_async(item_id, caller=_caller(principal))


# -- backups -----------------------------------------------------------------------------------------
@router.post("/storage/backup", summary="Incremental deduplicated snapshot (admin)")
async def backup(
    body: BackupRequest, request: Request, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    try:
        out = await _client().backup_async(body.source, body.tag)
    except Exception as e:
        audit(request, "storage.backup", None, "error", source=(body.source or "store")[:300], error=str(e)[:200])
        raise
    audit(request, "storage.backup", out["snapshot_id"], "ok", source=out["source"], bytes_added=out["bytes_added"])
    return out


@router.get("/storage/snapshots", summary="Backup snapshots")
async def snapshots(principal: Principal = Depends(require_read)) -> list[dict[str, Any]]:
    return await _client().snapshots_async()


@router.post("/storage/restore", summary="Restore a snapshot into the store or a folder (admin)")
async def restore(
    body: RestoreRequest, request: Request, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    try:
        out = await _client().restore_async(body.snapshot_id, body.item_ids, body.target)
    except Exception as e:
        audit(request, "storage.restore", body.snapshot_id, "error", error=str(e)[:200])
        raise
    audit(request, "storage.restore", body.snapshot_id, "ok", restored=out["restored"], into=out["target"])
    return out


@router.post("/storage/check", summary="Verify the backup repository (admin)")
async def check(body: CheckRequest, request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    out = await _client().check_async(body.read_data, body.repair)
    audit(
        request,
        "storage.check",
        None,
        "ok",
        read_data=body.read_data,
        repair=body.repair,
        damaged_chunks=out.get("damaged_chunks", 0),
    )
    return out


@router.post("/storage/prune", summary="Forget snapshots and remove unused chunks (admin)")
async def prune(body: PruneRequest, request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    out = await _client().prune_async(body.keep_last, body.keep_daily, body.keep_weekly)
    audit(request, "storage.prune", None, "ok", forgotten=len(out["forgotten"]), bytes_freed=out["bytes_freed"])
    return out


@router.post("/storage/repair/{item_id}", summary="Restore a damaged item from the latest snapshot that has it (admin)")
async def repair(
    request: Request, item_id: str = ITEM_PATH, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    out = await _client().repair_async(item_id)
    audit(request, "storage.repair", item_id, "ok", snapshot=out["snapshot"])
    return out


# -- lifecycle, metrics, services ----------------------------------------------------------------------
@router.post("/storage/optimize-tiering", summary="Run a lifecycle pass now (admin)")
async def optimize_tiering(
    body: TieringRequest, request: Request, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    out = await _client().optimize_tiering_async(body.dry_run)
    audit(
        request,
        "storage.optimize_tiering",
        None,
        "dry_run" if body.dry_run else "ok",
        migrated=len(out["migrated"]),
        failed=len(out["failed"]),
    )
    return out


@router.get("/storage/metrics", summary="Raw and stored bytes per tier, compression and dedup ratios, utilisation")
async def metrics(principal: Principal = Depends(require_read)) -> dict[str, Any]:
    return await _client().metrics_async()


@router.post("/storage/optimize-service", summary="A service's default tier, codec and lifecycle thresholds")
async def optimize_service(
    body: OptimizeServiceRequest, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    _check_service(body.service_name)
    authorize_service(principal, body.service_name, write=True)
    from serve_apps.http import enforce_caps  # service keys: only within the caps an admin sets

    enforce_caps(request, principal, body.service_name, "storage", body.parameters)
    out = await _client().optimize_service_async(body.service_name, body.parameters, caller=_caller(principal))
    audit(request, "storage.optimize_service", body.service_name, "ok", parameters=body.parameters)
    return out
