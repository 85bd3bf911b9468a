"""The ``cognopt`` command: serve the API, show its status, manage keys, back up a folder.

Each subcommand imports what it needs only (Ray, Serve, HTTP, the storage engine), so a command
such as ``cognopt backup`` starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import sys

import click

import cognopt_ray
from cognopt_ray.config import Settings
from cognopt_ray.errors import CognoptError


def _load_settings(config: str | None, **overrides) -> Settings:
    try:
        return Settings.load(config, **overrides)
    except CognoptError as e:
        raise click.ClickException(str(e)) from None


@click.group()
def main() -> None:
    """cognopt_ray: priority scheduling, memory pools, tiered storage and HTTP caching on Ray."""


@main.command()
def version() -> None:
    """Print the package, Ray and Python versions."""
    import ray

    click.echo(f"cognopt-ray {cognopt_ray.__version__} (ray {ray.__version__}, python {sys.version.split()[0]})")


@main.command()
@click.option(
    "--address", default=None, help="Ray address to join ('auto', host:port, ray://…); default: start a local Ray."
)
@click.option("--host", default=None, help="HTTP host (default from settings: 127.0.0.1).")
@click.option("--port", default=None, type=int, help="HTTP port (default from settings: 8000).")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False), help="YAML settings file.")
@click.option("--num-cpus", default=None, type=int, help="CPUs of a locally started Ray.")
@click.option(
    "--task",
    "tasks",
    multiple=True,
    metavar="NAME=MODULE:FUNCTION",
    help="Register a task for cpu/optimize-tasks (repeatable; adds to the setting cpu.tasks).",
)
def serve(
    address: str | None,
    host: str | None,
    port: int | None,
    config: str | None,
    num_cpus: int | None,
    tasks: tuple[str, ...],
) -> None:
    """Start (or join) Ray, deploy the API, print its URL and an admin key, run until Ctrl-C."""
    import signal
    import threading

    from ray import serve as ray_serve

    from cognopt_ray import runtime
    from cognopt_ray.cpu import configured
    from serve_apps.optimization_api import app_builder

    try:
        extra = dict(configured.parse_task_option(t) for t in tasks)
    except CognoptError as e:
        raise click.ClickException(str(e)) from None
    settings = _load_settings(config, **({"cpu": {"tasks": extra}} if extra else {}))
    try:  # every task path imports before Ray starts: a typo stops here, naming the setting
        configured.resolve(settings)
    except CognoptError as e:
        raise click.ClickException(str(e)) from None
    host = host or settings.http_host
    port = port or settings.http_port
    admin_key, records = _first_admin_key(settings)
    # The replica gets hashes only; a key printed here is never stored whole.
    overrides = settings.model_dump(
        mode="json", exclude={"admin_key", "encryption_key", "installation_secret", "api_keys"}
    )
    overrides["api_keys"] = [r.model_dump(mode="json") for r in [*settings.api_keys, *records]]
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        runtime.init(address, settings, num_cpus=num_cpus, detached=True, log_to_driver=False)
        ray_serve.start(http_options={"host": host, "port": port})
        ray_serve.run(app_builder({"config_file": config, "settings": overrides}), name="cognopt", route_prefix="/")
    except CognoptError as e:
        raise click.ClickException(str(e)) from None
    base = f"http://{host}:{port}/api/v0/optimization"
    import ray

    click.echo(f"cognopt_ray API ready at {base}")
    # jobs on this machine (python -m cognopt_ray.jobs.health) join this Ray by its address, with
    # token auth when the Ray started here turned it on (Ray >= 2.60 does by default; the token
    # itself stays in ~/.ray/auth_token)
    mode = "RAY_AUTH_MODE=token " if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else ""
    click.echo(f"  ray:     {mode}RAY_ADDRESS={ray.get_runtime_context().gcs_address}")
    click.echo(f"  health:  curl {base}/health")
    click.echo(f"  docs:    http://{host}:{port}/docs")
    if settings.cpu.tasks:
        click.echo(f"  tasks:   {', '.join(sorted(settings.cpu.tasks))} (POST {base}/cpu/optimize-tasks)")
    if admin_key:
        click.echo(f"  admin key (shown once, only its hash is stored): {admin_key}")
        click.echo(f"  try:     curl -H 'Authorization: Bearer {admin_key}' {base}/health/details")
    elif settings.admin_key is not None:
        click.echo("  admin key: the one in COGNOPT_ADMIN_KEY")
    else:
        click.echo(
            "  admin key: made at the first start and shown then only; "
            "make another with `cognopt keys create --scope admin`"
        )
    click.echo("Press Ctrl-C to stop.", nl=True)
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    click.echo("stopping cognopt_ray API ...")
    started_here = runtime._state.started_ray
    try:
        if not started_here:  # a cluster we joined keeps running; only our app goes
            ray_serve.delete("cognopt")
    finally:
        # a Ray started here takes Serve, the app and the engines down with it
        runtime.shutdown(kill_engines=started_here)
    click.echo("stopped.")


def _first_admin_key(settings: Settings) -> tuple[str | None, list]:
    """The admin key to print (only on a root that has none yet) and records the replica needs.

    With ``COGNOPT_ADMIN_KEY`` (or an admin key in settings) nothing is made. Otherwise the first
    start makes a key, stores its hash in ``<storage_root>/keys.json`` and returns it to be shown
    once; later starts find it there and return ``None``.
    """
    from cognopt_ray.security.keys import KeyStore, record_for_plain_key

    if settings.admin_key is not None:
        return None, [record_for_plain_key(settings.admin_key.get_secret_value())]
    if any("admin" in r.scopes for r in settings.api_keys):
        return None, []
    return KeyStore(settings).ensure_first_admin(note="first-run admin key (cognopt serve)"), []


@main.command()
@click.option("--url", default=None, help="Base URL (default http://<http_host>:<http_port>).")
@click.option(
    "--key",
    "key",
    default=None,
    envvar="COGNOPT_API_KEY",
    help="A read or admin key (or COGNOPT_API_KEY): show the details, not only the statuses.",
)
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False))
def status(url: str | None, key: str | None, config: str | None) -> None:
    """Print the health of a running server; exit 1 when it is not ok.

    Without a key it shows what ``GET health`` shows anyone: up, degraded or down per part. With
    a key (scope read or admin) it shows ``GET health/details``: versions, counts and reasons.
    """
    import urllib.error
    import urllib.request

    settings = _load_settings(config)
    base = (url or f"http://{settings.http_host}:{settings.http_port}").rstrip("/")
    path = "health/details" if key else "health"
    req = urllib.request.Request(
        f"{base}/api/v0/optimization/{path}", headers={"Authorization": f"Bearer {key}"} if key else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        doc = json.loads(e.read() or b"{}")
        if e.code in (401, 403):
            raise click.ClickException(
                f"{doc.get('detail', e.reason)} ({doc.get('hint', 'use a read or admin key')})"
            ) from None
    except OSError as e:
        raise click.ClickException(f"no server answers at {base}: {e}") from None
    click.echo(json.dumps(doc, indent=2))
    sys.exit(0 if doc.get("status") == "ok" else 1)


@main.group()
def keys() -> None:
    """Manage API keys (stored as hashes under the storage root)."""


@keys.command("create")
@click.option("--scope", "scopes", multiple=True, required=True, help="admin, read or service:<name>; repeatable.")
@click.option("--note", default=None, help="A note stored with the key.")
@click.option("--ttl-s", "ttl_s", default=None, type=float, help="Seconds until the key stops working.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False))
def keys_create(scopes: tuple[str, ...], note: str | None, ttl_s: float | None, config: str | None) -> None:
    """Create a key, print it once, store only its hash."""
    from cognopt_ray.security.keys import KeyStore, generate_key

    settings = _load_settings(config)
    from cognopt_ray.config import SCOPE_RE

    bad = [s for s in scopes if not SCOPE_RE.match(s)]
    if bad:
        raise click.BadParameter(f"{bad} are not scopes; use admin, read or service:<name>", param_hint="--scope")
    try:
        key, record = generate_key(scopes, note=note, ttl_s=ttl_s)
    except CognoptError as e:
        raise click.BadParameter(str(e), param_hint="--ttl-s") from None
    store = KeyStore(settings)
    store.add(record)
    click.echo(key)
    expiry = f", expires {record.expires_at}" if record.expires_at else ""
    click.echo(
        f"key id {record.id}, scopes {', '.join(record.scopes)}{expiry}; stored (hash only) in {store.path}", err=True
    )


@keys.command("revoke")
@click.argument("key_id")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False))
def keys_revoke(key_id: str, config: str | None) -> None:
    """Revoke the key KEY_ID: every server on this storage root refuses it from its next call."""
    from cognopt_ray.security.keys import KeyStore

    try:
        rec = KeyStore(_load_settings(config)).revoke(key_id)
    except CognoptError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"key {rec.id} revoked at {rec.revoked_at}")


@keys.command("list")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False))
def keys_list(config: str | None) -> None:
    """List the keys (ids, scopes, expiry, revocation; never secrets or hashes)."""
    from cognopt_ray.security.keys import KeyStore, usable

    for r in KeyStore(_load_settings(config)).records():
        why = usable(r)
        click.echo(f"{r.id}\t{','.join(r.scopes)}\t{'active' if why is None else why}\t{r.note or ''}")


@main.group()
def assets() -> None:
    """Static assets for a CDN: fingerprinted names, precompressed variants, a manifest."""


@assets.command("build")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option(
    "--upload", "upload_uri", default=None, help="Copy the build to this pyarrow.fs URI (s3://, gs://, file://)."
)
def assets_build(src: str, dst: str, upload_uri: str | None) -> None:
    """Build SRC into DST (content-hashed names, .gz/.br/.zst where smaller, manifest.json)."""
    from cognopt_ray.network import assets as _assets

    try:
        manifest = _assets.build(src, dst)
        click.echo(
            f"{len(manifest['files'])} assets built into {dst}: {manifest['bytes_raw']} bytes raw, "
            f"{manifest['bytes_smallest']} bytes as the smallest variants"
        )
        if upload_uri:
            n = _assets.upload(dst, upload_uri)
            click.echo(f"uploaded {n} files to {upload_uri}")
    except CognoptError as e:
        raise click.ClickException(str(e)) from None


@main.command()
@click.option(
    "--address",
    default="auto",
    show_default=True,
    help="Ray cluster to read the engines' counters from ('auto', host:port, ray://…).",
)
@click.option(
    "--config", "config", default=None, type=click.Path(dir_okay=False), help="YAML settings file (prices, target)."
)
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option(
    "--output", "output", default=None, type=click.Path(dir_okay=False), help="Write to this file instead of stdout."
)
def report(address: str, config: str | None, fmt: str, output: str | None) -> None:
    """The savings report (cores, RAM, storage, bandwidth, monthly cost) from the engines' counters."""
    import asyncio

    from cognopt_ray.system.report import system_report, to_markdown

    settings = _load_settings(config)
    try:
        cognopt_ray.init(address=address, settings=settings)
        doc = asyncio.run(system_report(settings))
    except CognoptError as e:
        raise click.ClickException(str(e)) from None
    text = to_markdown(doc) if fmt == "markdown" else json.dumps(doc, indent=2, default=str)
    if output:
        with open(output, "w") as f:
            f.write(text + "\n")
        click.echo(f"report written to {output}")
    else:
        click.echo(text)


@main.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--repo",
    default=None,
    help="Backup repository (folder or pyarrow.fs URI); default: settings storage.backup_root.",
)
@click.option("--tag", default=None, help="A label kept with the snapshot.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False), help="YAML settings file.")
def backup(source: str, repo: str | None, tag: str | None, config: str | None) -> None:
    """Back up the folder SOURCE into the deduplicated repository, in this process (no Ray).

    Encrypted when ``encryption_key`` is set (``COGNOPT_ENCRYPTION_KEY``). Prints the snapshot's
    summary as JSON. This reads SOURCE with the caller's own permissions, as restic or borg
    would; backups through the engine (the job, the REST route) stay confined to
    ``storage.backup_source_roots``.
    """
    from cognopt_ray.storage.backup import BackupRepository

    settings = _load_settings(config)
    if repo:
        settings = settings.model_copy(update={"storage": settings.storage.model_copy(update={"backup_root": repo})})
    try:
        snap = BackupRepository.for_settings(settings).backup(source, tag=tag)
    except CognoptError as e:
        raise click.ClickException(str(e)) from None
    keys = ("snapshot_id", "files", "bytes_scanned", "bytes_read", "bytes_added", "chunks_new", "seconds")
    click.echo(json.dumps({k: snap.get(k) for k in keys}))


if __name__ == "__main__":  # pragma: no cover
    main()
