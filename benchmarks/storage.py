"""Storage engine benchmark: warm path, small items, archive size, deduplicated backups vs restic.

Corpus (built at run time from files no one here wrote): the Python standard library's source,
the text and JSON files of the installed packages, plus generated JSON logs, a CSV-like Arrow
table (written as CSV text), float arrays and random bytes.

Baselines (``results.baseline``): zstd-1 files for the warm path, SQLite with one transaction per
batch for small items, raw LZMA2 / zstd-19 streams per file for the archive tier, and restic and
borg (lz4 and zstd,3) for backups. Ratios (all measured side by side in this run):

* ``warm_path_ratio`` = engine MB/s ÷ plain MB/s, where MB/s = bytes ÷ (store seconds + retrieve
  seconds) over the corpus cut into 1 MiB items. Engine: ``put_many``/``get_many`` through the
  ``cognopt.storage`` actor, ``auto`` codec, warm tier, durable writes (batches of 8). Plain: for
  each item zstd level 1 compress, write a temp file, fsync, rename; then read and decompress.
* ``small_item_ratio`` = engine ops/s ÷ plain ops/s with 4 KiB items, both committing in batches
  of 256: the engine one catalog commit per batch; plain a SQLite table (WAL, ``synchronous=FULL``),
  zstd-1 values, one transaction per batch, read back by key range.
  ``results.small_item_ratio_vs_per_item_fsync`` is the old, weaker baseline (a file + fsync per item).
* ``archive_size_ratio`` = (archive stored bytes + dictionary bytes + the catalog's row bytes for
  those items) ÷ Σ per file of min(raw LZMA2 preset 9 stream, zstd-19 frame), the corpus's files
  stored one item per file. Catalog row bytes = the payload of the items' rows in ``items``,
  ``item_chunks`` and ``chunks`` (text as UTF-8, numbers as 8 bytes; SQLite's page overhead is
  not counted). No ``.xz`` container on the baseline side.
* Backups, every tool timed as a whole process (start-up, key handling, locks, index included;
  our package's bytecode compiled beforehand, as an install has it), every repository encrypted: ours is ``cognopt backup`` with an ``encryption_key``
  (``results.encrypted`` = 1); restic 0.14 (``init --repository-version 2``, default compression);
  borg 1.2 (``repokey-blake2``) with ``--compression lz4`` and with ``zstd,3`` — each peer that is
  installed. The dataset is first backed up into two fresh repositories per tool (best of two
  kept for the throughput), then 1 % of the files are edited (100 random bytes inserted at one
  offset, 100 overwritten at another) and backed up again into the first repository.

  - ``backup_throughput_vs_best_peer`` = our first-backup MB/s ÷ the fastest peer's.
  - ``backup_size_vs_best_peer`` = our repository bytes after the first backup ÷ the smallest peer's
    (< 1 is better).
  - ``backup_growth_vs_best_peer`` = our repository growth from the second backup ÷ the smallest
    peer growth (< 1 is better).
  - ``backup_added_fraction`` = our growth ÷ dataset bytes.

The warm and small-item comparisons run each side ``REPEATS`` times, alternated, and keep each
side's best run (on a shared machine the slow runs measure the neighbours).

A peer missing from the PATH is listed in ``results.peers`` as absent; with no peer at all the
three ``*_vs_best_peer`` ratios are ``null``.
"""

from __future__ import annotations

import base64
import json
import lzma
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import zstandard

from benchmarks._harness import emit, parse_args

MiB = 1024 * 1024
BASELINE = (
    "zstd-1 files (warm), SQLite batches (small items), raw LZMA2/zstd-19 streams (archive), "
    "restic and borg lz4/zstd,3 as whole processes, all encrypted (backups)"
)
#: Runs of each side of the warm and small-item comparisons (alternated; best of each kept).
REPEATS = 2


# ----------------------------------------------------------------------------------------- corpus
def stage(msg: str) -> None:
    """Progress on stderr (stdout ends with the JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def corpus_files(limit_bytes: int, max_file: int = 4 * MiB) -> list[Path]:
    """Real text files: stdlib sources first, then text/JSON files of installed packages."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    out, total = [], 0
    exts = {".py", ".txt", ".json", ".md", ".rst", ".cfg", ".toml", ".pyi", ".csv", ".html"}
    for root in roots:
        for dirpath, dirnames, files in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "site-packages") or root != roots[0])
            if root == roots[0] and "site-packages" in dirpath:
                continue
            for f in sorted(files):
                p = Path(dirpath) / f
                if p.suffix not in exts or p.is_symlink():
                    continue
                try:
                    size = p.stat().st_size
                except OSError:
                    continue
                if 0 < size <= max_file:
                    out.append(p)
                    total += size
                    if total >= limit_bytes:
                        return out
    return out


def generated_blobs(rng: random.Random, n_logs: int) -> dict[str, bytes]:
    """JSON logs, a CSV-like table, float arrays and random bytes."""
    levels = ["INFO", "WARN", "DEBUG", "ERROR"]
    logs = "\n".join(
        json.dumps(
            {
                "ts": 1700000000 + i,
                "level": rng.choice(levels),
                "service": rng.choice(["api", "db", "auth"]),
                "latency_ms": round(rng.random() * 300, 2),
                "user": f"u{rng.randint(1, 5000)}",
                "path": f"/v1/items/{rng.randint(1, 10**6)}",
            }
        )
        for i in range(n_logs)
    ).encode()
    table = "id,name,price,qty,city\n" + "\n".join(
        f"{i},item{rng.randint(1, 9999)},{rng.random() * 100:.2f},{rng.randint(1, 50)},{rng.choice(['Paris', 'Lima', 'Oslo', 'Kyiv'])}"
        for i in range(n_logs)
    )
    nprng = np.random.default_rng(rng.randint(0, 2**31))
    floats = np.cumsum(nprng.normal(size=n_logs // 2)).astype(np.float64).tobytes()
    return {
        "logs.jsonl": logs,
        "table.csv": table.encode(),
        "floats.f64": floats,
        "random.bin": rng.randbytes(len(floats) // 4),
    }


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


# ----------------------------------------------------------------------------------------- plain paths
def plain_durable(items: list[bytes], folder: Path) -> float:
    """zstd-1, temp file, fsync, rename; then read and decompress. Returns seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    c = zstandard.ZstdCompressor(level=1)
    d = zstandard.ZstdDecompressor()
    t0 = time.perf_counter()
    for i, item in enumerate(items):
        tmp, final = folder / f"{i}.tmp", folder / f"{i}.zst"
        with open(tmp, "wb") as f:
            f.write(c.compress(item))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    for i, item in enumerate(items):
        with open(folder / f"{i}.zst", "rb") as f:
            out = d.decompress(f.read())
        assert len(out) == len(item)
    return time.perf_counter() - t0


def plain_batched(items: list[bytes], path: Path, batch: int) -> float:
    """SQLite (WAL, synchronous=FULL), zstd-1 values, one transaction per ``batch``; then read back
    by key range and decompress. Returns seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
    c = zstandard.ZstdCompressor(level=1)
    d = zstandard.ZstdDecompressor()
    t0 = time.perf_counter()
    for s in range(0, len(items), batch):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO kv VALUES (?, ?)", [(j, c.compress(items[j])) for j in range(s, min(len(items), s + batch))]
        )
        db.execute("COMMIT")
    for s in range(0, len(items), batch):
        rows = db.execute("SELECT k, v FROM kv WHERE k >= ? AND k < ? ORDER BY k", (s, s + batch)).fetchall()
        assert all(len(d.decompress(v)) == len(items[k]) for k, v in rows)
    took = time.perf_counter() - t0
    db.close()
    return took


def catalog_row_bytes(db_path: Path, service: str) -> int:
    """Payload bytes of the catalog rows for ``service``'s items (items, item_chunks, chunks)."""

    def size(v) -> int:
        if isinstance(v, bytes):
            return len(v)
        if isinstance(v, str):
            return len(v.encode())
        return 0 if v is None else 8

    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        total = sum(sum(map(size, r)) for r in con.execute("SELECT * FROM items WHERE service=?", (service,)))
        sub = "SELECT item_id FROM items WHERE service=?"
        total += sum(
            sum(map(size, r)) for r in con.execute(f"SELECT * FROM item_chunks WHERE item_id IN ({sub})", (service,))
        )
        total += sum(
            sum(map(size, r))
            for r in con.execute(
                f"SELECT * FROM chunks WHERE hash IN (SELECT hash FROM item_chunks WHERE item_id IN ({sub}))",
                (service,),
            )
        )
    finally:
        con.close()
    return total


def raw_lzma(data: bytes) -> int:
    """Bytes of a raw LZMA2 preset-9 stream (no .xz container)."""
    return len(lzma.compress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}]))


def engine_path(store, items: list[bytes], prefix: str, batch: int) -> float:
    ids = [f"{prefix}-{i}" for i in range(len(items))]
    t0 = time.perf_counter()
    for s in range(0, len(items), batch):
        store.put_many(
            [
                {"item_id": ids[j], "data": items[j], "tier": "warm", "codec": "auto", "service": prefix}
                for j in range(s, min(len(items), s + batch))
            ]
        )
    for s in range(0, len(items), batch):
        got = store.get_many(ids[s : s + batch])
        assert all(len(g) == len(items[s + k]) for k, g in enumerate(got))
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------- backups
def make_dataset(folder: Path, files: list[Path], blobs: dict[str, bytes], size: int) -> int:
    total = 0
    for name, data in blobs.items():
        (folder / "generated").mkdir(parents=True, exist_ok=True)
        (folder / "generated" / name).write_bytes(data)
        total += len(data)
    for i, p in enumerate(files):
        if total >= size:
            break
        dest = folder / f"d{i % 40:02d}" / f"{i}_{p.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = p.read_bytes()
        dest.write_bytes(data)
        total += len(data)
    return total


def plan_edits(folder: Path, rng: random.Random) -> list[tuple[str, int, bytes, int, bytes]]:
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    chosen = rng.sample(files, max(1, len(files) // 100))
    edits = []
    for rel in chosen:
        n = (folder / rel).stat().st_size
        edits.append((rel, rng.randint(0, n), rng.randbytes(100), rng.randint(0, max(0, n - 100)), rng.randbytes(100)))
    return edits


def apply_edits(folder: Path, edits) -> None:
    for rel, ins_at, ins, ow_at, ow in edits:
        p = folder / rel
        data = bytearray(p.read_bytes())
        data[ins_at:ins_at] = ins
        data[ow_at : ow_at + 100] = ow
        p.write_bytes(bytes(data))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def same_tree(a: Path, b: Path) -> bool:
    fa = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    fb = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)


def run_timed(cmd: list[str], env: dict[str, str], out: list | None = None) -> float:
    """Seconds of a whole process, start-up included (its stdout appended to ``out`` if given)."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} {cmd[1]} failed ({r.returncode}): {r.stderr.decode()[-800:]}")
    if out is not None:
        out.append(r.stdout.decode())
    return took


class Tool:
    """One backup program: ``init`` (not timed), ``backup`` (timed as a whole process)."""

    def __init__(self, name: str, work: Path) -> None:
        self.name = name
        self.work = work / f"tool-{name}"
        self.work.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("COGNOPT_", "RESTIC_", "BORG_"))}
        if name == "cognopt":
            key = base64.b64encode(os.urandom(32)).decode()
            self.env = {**base, "COGNOPT_ENCRYPTION_KEY": key, "COGNOPT_STORAGE_ROOT": str(self.work / "root")}
            self.key = key
            exe = Path(sys.executable).with_name("cognopt")
            self.exe = str(exe) if exe.exists() else (shutil.which("cognopt") or "cognopt")
            # An installed package has its bytecode compiled (pip does it at install, as Debian's
            # py3compile does for borg's); a source checkout under PYTHONDONTWRITEBYTECODE has none
            # and would compile every module at each start. Compile it here, untimed.
            import compileall
            import importlib.util

            spec = importlib.util.find_spec("cognopt_ray")
            for folder in spec.submodule_search_locations if spec else []:
                compileall.compile_dir(folder, quiet=1)
        elif name == "restic":
            self.env = {**base, "RESTIC_PASSWORD": "bench-password", "RESTIC_CACHE_DIR": str(self.work / "cache")}
        else:
            self.env = {
                **base,
                "BORG_PASSPHRASE": "bench-password",
                "BORG_BASE_DIR": str(self.work / "base"),
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            }
            self.compression = "lz4" if name == "borg-lz4" else "zstd,3"
        self.archives = 0
        #: our backup's own ``seconds`` (the CLI's JSON summary), per backup: the time without start-up
        self.inner_s: list[float] = []

    @staticmethod
    def available(name: str) -> bool:
        return name == "cognopt" or shutil.which("restic" if name == "restic" else "borg") is not None

    def version(self) -> str:
        if self.name == "cognopt":
            cmd = [self.exe, "version"]
        else:
            cmd = ["restic", "version"] if self.name == "restic" else ["borg", "--version"]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True).stdout.strip()

    def init(self, repo: Path) -> None:
        if self.name == "restic":
            run_timed(["restic", "-r", str(repo), "init", "--repository-version", "2"], self.env)
        elif self.name.startswith("borg"):
            run_timed(["borg", "init", "--encryption=repokey-blake2", str(repo)], self.env)

    def backup(self, repo: Path, source: Path) -> float:
        self.archives += 1
        if self.name == "cognopt":
            out: list[str] = []
            took = run_timed([self.exe, "backup", str(source), "--repo", str(repo)], self.env, out)
            self.inner_s.append(json.loads(out[0].strip().splitlines()[-1])["seconds"])
            return took
        if self.name == "restic":
            return run_timed(["restic", "-r", str(repo), "backup", "--quiet", str(source)], self.env)
        return run_timed(
            ["borg", "create", "--compression", self.compression, f"{repo}::a{self.archives}", str(source)], self.env
        )


# ----------------------------------------------------------------------------------------- main
def main() -> None:
    args = parse_args("storage", __doc__.splitlines()[0])
    quick = args.quick
    rng = random.Random(42)
    work = Path(tempfile.mkdtemp(prefix="cognopt-bench-storage-"))
    rows = []
    results: dict = {"baseline": BASELINE}
    try:
        import cognopt_ray
        from cognopt_ray.config import Settings
        from cognopt_ray.storage import client

        settings = Settings.load(
            storage_root=str(work / "engine"),
            storage={
                "lifecycle_enabled": False,
                "progress": False,
                "min_free_bytes": 0,
                # the dataset and the restore folder live in the work folder
                "backup_source_roots": [str(work)],
                "restore_roots": [str(work)],
            },
        )
        for attempt in range(3):  # a busy machine can time out Ray's start-up; try again
            try:
                cognopt_ray.init(settings=settings, num_cpus=2, include_dashboard=False, log_to_driver=False)
                break
            except Exception as e:
                stage(f"Ray did not start ({e}); retrying")
                cognopt_ray.shutdown()
                if attempt == 2:
                    raise
        store = client(settings)
        store.health()

        warm_bytes = (24 if quick else 128) * MiB
        files = corpus_files(max(warm_bytes, (64 if quick else 512) * MiB))
        blobs = generated_blobs(rng, 20000 if quick else 100000)
        text = b"".join(p.read_bytes() for p in files[:4000])[: warm_bytes - 4 * MiB] + b"".join(blobs.values())
        results["corpus_files"] = len(files)

        stage("warm path, 1 MiB items")
        items = cut(text, MiB)[: warm_bytes // MiB]
        # alternate the two paths and keep each one's best run: on a shared machine the
        # slowest runs measure the neighbours, not the code
        plain_s = eng_s = float("inf")
        for rep in range(REPEATS):
            plain_s = min(plain_s, plain_durable(items, work / f"plain1-{rep}"))
            eng_s = min(eng_s, engine_path(store, items, f"warm1m{rep}", 8))
        mb = sum(map(len, items)) / MiB
        results["warm_engine_mb_s"], results["warm_plain_mb_s"] = mb / eng_s, mb / plain_s
        rows.append(("warm 1 MiB items", len(items), mb / eng_s, mb / plain_s, "MB/s"))

        stage("small items, 4 KiB")
        n_small = 2000 if quick else 20000
        small = cut(text[len(text) // 3 :], 4096)[:n_small]
        plain_s = eng_s = fsync_s = float("inf")
        for rep in range(REPEATS):
            plain_s = min(plain_s, plain_batched(small, work / f"sqlite4k-{rep}" / "kv.sqlite", 256))
            eng_s = min(eng_s, engine_path(store, small, f"small4k{rep}", 256))
            fsync_s = min(fsync_s, plain_durable(small, work / f"plain4k-{rep}"))
        results["small_engine_ops_s"], results["small_plain_ops_s"] = len(small) / eng_s, len(small) / plain_s
        results["small_per_item_fsync_ops_s"] = len(small) / fsync_s
        results["small_item_ratio_vs_per_item_fsync"] = fsync_s / eng_s
        rows.append(
            ("warm 4 KiB items (plain: SQLite batches)", len(small), len(small) / eng_s, len(small) / plain_s, "ops/s")
        )

        # random bytes
        rec = store.put("random-bytes", rng.randbytes(MiB), tier="warm", codec="auto")
        results["random_codec"] = rec["codec"]

        stage("archive size")
        arch_limit = (2 if quick else 40) * MiB
        arch_files, total = [], 0
        for p in files[::3]:
            arch_files.append(p)
            total += p.stat().st_size
            if total >= arch_limit:
                break
        datas = [p.read_bytes() for p in arch_files]
        z19 = zstandard.ZstdCompressor(level=19)
        baseline = sum(min(raw_lzma(d), len(z19.compress(d))) for d in datas)
        t0 = time.perf_counter()
        for s in range(0, len(datas), 256):
            store.put_many(
                [
                    {"item_id": f"arch-{j}", "data": datas[j], "tier": "archive", "codec": "auto", "service": "corpus"}
                    for j in range(s, min(len(datas), s + 256))
                ]
            )
        arch_s = time.perf_counter() - t0
        m = store.metrics()
        cat_bytes = catalog_row_bytes(settings.root / "storage" / "catalog.sqlite", "corpus")
        engine_arch = m["tiers"]["archive"]["stored_bytes"] + m["dictionary_bytes"] + cat_bytes
        results.update(
            archive_catalog_bytes=cat_bytes,
            archive_files=len(datas),
            archive_raw_bytes=sum(map(len, datas)),
            archive_engine_bytes=engine_arch,
            archive_baseline_bytes=baseline,
            archive_dictionary_bytes=m["dictionary_bytes"],
            archive_dedup_ratio=m["dedup_ratio"],
            archive_store_s=arch_s,
        )
        assert store.get("arch-0") == datas[0]
        rows.append(("archive bytes", len(datas), engine_arch, baseline, "bytes (engine, min(lzma9,zstd19))"))

        stage("backups")
        ds_size = (64 if quick else 512) * MiB
        ds = work / "dataset"
        ds_bytes = make_dataset(ds, files, blobs, ds_size)
        results["dataset_bytes"] = ds_bytes
        names = [n for n in ("cognopt", "restic", "borg-lz4", "borg-zstd3") if Tool.available(n)]
        tools = {n: Tool(n, work) for n in names}
        first_s: dict[str, float] = {n: float("inf") for n in names}
        size1: dict[str, int] = {}
        for rep in range(2):  # two first backups per tool into fresh repositories, alternated
            for n, tool in tools.items():
                repo = tool.work / f"repo{rep}"
                tool.init(repo)
                first_s[n] = min(first_s[n], tool.backup(repo, ds))
                if rep == 0:
                    size1[n] = du(repo)
                else:
                    shutil.rmtree(repo, ignore_errors=True)
        edits = plan_edits(ds, rng)
        apply_edits(ds, edits)
        growth: dict[str, int] = {}
        for n, tool in tools.items():
            repo = tool.work / "repo0"
            tool.backup(repo, ds)
            growth[n] = du(repo) - size1[n]
        ours = tools["cognopt"]
        from cognopt_ray.storage.backup import BackupRepository

        ours_repo = BackupRepository(str(ours.work / "repo0"), key_b64=ours.key, progress=False)
        assert ours_repo.config["encrypted"], "our backup repository is not encrypted"
        out = work / "restore"
        ours_repo.restore(ours_repo.snapshots()[-1]["snapshot_id"], target=str(out))
        results["restore_identical"] = same_tree(ds, out)
        mb_s = {n: ds_bytes / MiB / first_s[n] for n in names}
        peers = [n for n in names if n != "cognopt"]
        results.update(
            encrypted=1,
            backup1_s=first_s["cognopt"],
            backup1_mb_s=mb_s["cognopt"],
            backup1_in_process_s=min(ours.inner_s[:2]),
            process_start_s=first_s["cognopt"] - min(ours.inner_s[:2]),
            backup_repo_bytes=size1["cognopt"],
            backup_repo_growth=growth["cognopt"],
            edited_files=len(edits),
            peers={
                n: (
                    {
                        "version": tools[n].version(),
                        "backup1_s": first_s[n],
                        "backup1_mb_s": mb_s[n],
                        "repo_bytes": size1[n],
                        "repo_growth": growth[n],
                    }
                    if n in tools
                    else "absent: not installed (scripts/bench.sh installs restic and borgbackup)"
                )
                for n in ("restic", "borg-lz4", "borg-zstd3")
            },
        )
        if "restic" in tools:
            results["dedup_vs_restic"] = growth["restic"] / growth["cognopt"] if growth["cognopt"] else None
            results["backup_throughput_vs_restic"] = mb_s["cognopt"] / mb_s["restic"]
        for n in names:
            rows.append((f"backup 1 ({n})", len(edits), mb_s[n], size1[n], "MB/s, repository bytes"))
            rows.append((f"backup 2 growth ({n})", len(edits), growth[n], None, "bytes"))
        ratios = {
            "warm_path_ratio": results["warm_engine_mb_s"] / results["warm_plain_mb_s"],
            "small_item_ratio": results["small_engine_ops_s"] / results["small_plain_ops_s"],
            "archive_size_ratio": engine_arch / baseline,
            "backup_added_fraction": growth["cognopt"] / ds_bytes,
            "backup_throughput_vs_best_peer": mb_s["cognopt"] / max(mb_s[n] for n in peers) if peers else None,
            "backup_size_vs_best_peer": size1["cognopt"] / min(size1[n] for n in peers) if peers else None,
            "backup_growth_vs_best_peer": growth["cognopt"] / min(growth[n] for n in peers) if peers else None,
        }
        emit("storage", quick, results, ratios, rows, ("case", "n", "cognopt", "plain", "unit"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
