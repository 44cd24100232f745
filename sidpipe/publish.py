"""Versioned, atomic publishing of staged runs, and the reader API over published versions.

Layout of one dataset under a root::

    <root>/<dataset>/
      <version>/              a published version: the staged run dir's contents + manifest.json (written last)
      _staging/<version>/     a run in progress (deterministic path, so a killed run resumes there)
      _staging/<version>.plan.json, .config.yaml   what the run was planned with (parent pinned, resolved config)
      _cache/                 shared across versions (embedding cache)
      _locks/                 fcntl lock files: one per version, one for the dataset's pointer
      latest                  JSON {"version": ..., "history": [...]}, replaced atomically after a publish

Publishing is: validate the staged dir (every stage marker present) -> ``os.rename`` it to its final
path (same filesystem, atomic) -> write ``manifest.json`` -> update ``latest``. Readers only ever see
version dirs that have a manifest, so a crash at any point leaves no visible partial version.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.common.io import atomic_write_text
from jobs.common.layout import RunLayout

log = logging.getLogger("sidpipe.publish")

MANIFEST = "manifest.json"
LATEST = "latest"
MANIFEST_FORMAT = 1


class PublishError(RuntimeError):
    """A staged run cannot be published (missing stage output, unknown version, ...)."""


class VersionLocked(RuntimeError):
    """Another run holds the lock of this version (or dataset) and did not release it in time."""


@dataclass(frozen=True)
class DatasetPaths:
    """Every path of one dataset under a publishing root; the only place these names appear."""

    root: Path
    dataset: str = "sidpipe"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.dataset):
            raise PublishError(f"dataset name {self.dataset!r} must be a plain name (letters, digits, _ . -)")

    @property
    def base(self) -> Path:
        return self.root / self.dataset

    def version_dir(self, version: str) -> Path:
        return self.base / version

    def staging_dir(self, version: str) -> Path:
        return self.base / "_staging" / version

    def plan_file(self, version: str) -> Path:
        return self.base / "_staging" / f"{version}.plan.json"

    def config_file(self, version: str) -> Path:
        return self.base / "_staging" / f"{version}.config.yaml"

    @property
    def cache_dir(self) -> Path:
        return self.base / "_cache"

    def version_lock(self, version: str) -> Path:
        return self.base / "_locks" / f"{version}.lock"

    @property
    def dataset_lock(self) -> Path:
        return self.base / "_locks" / "_dataset.lock"

    @property
    def latest(self) -> Path:
        return self.base / LATEST


# ----------------------------------------------------------------------------------------- locks


@contextmanager
def file_lock(path: Path, *, timeout: float | None = None, what: str = "") -> Iterator[None]:
    """Exclusive ``fcntl.flock`` on ``path``; waits up to ``timeout`` seconds (None: forever).

    The kernel drops the lock when the holder dies, so a killed run never leaves a stale lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    holder = _read_holder(path)
                    raise VersionLocked(
                        f"{what or path.name} is locked by another run ({holder}); waited {timeout:.0f}s. "
                        f"Wait for it to finish, or run a different snapshot/config."
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read_holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown holder"
    except OSError:
        return "unknown holder"


# ------------------------------------------------------------------------------------ manifests


def is_published(version_dir: Path) -> bool:
    return (Path(version_dir) / MANIFEST).is_file()


def read_manifest(version_dir: Path) -> dict[str, Any]:
    path = Path(version_dir) / MANIFEST
    if not path.is_file():
        raise PublishError(f"{version_dir} is not a published version (no {MANIFEST})")
    return json.loads(path.read_text())


def read_markers(run_dir: Path, stages: list[str]) -> dict[str, dict[str, Any]]:
    layout = RunLayout(Path(run_dir))
    missing = [s for s in stages if not layout.marker(s).is_file()]
    if missing:
        raise PublishError(f"cannot publish {run_dir}: stages not complete: {', '.join(missing)}")
    return {s: json.loads(layout.marker(s).read_text()) for s in stages}


_SPARK_PART = re.compile(r"part-(\d+)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def data_fingerprints(run_dir: Path) -> dict[str, str]:
    """Content hash of each top-level output (table dir or file) of a run.

    Spark names part files with a random UUID, so the UUID is dropped from the name: two runs with
    byte-identical data get identical fingerprints. Bookkeeping files (``_SUCCESS``, ``.crc``) are skipped,
    and so is the human report, which records wall-clock stage timings and is documentation, not data.
    """
    run_dir = Path(run_dir)
    not_data = {MANIFEST, RunLayout(run_dir).report.name}
    out: dict[str, str] = {}
    for entry in sorted(run_dir.iterdir()):
        if entry.name.startswith((".", "_")) or entry.name in not_data:
            continue
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        h = hashlib.sha256()
        keyed = []
        for f in files:
            rel = f.relative_to(run_dir)
            if any(part.startswith((".", "_")) for part in rel.parts):
                continue
            keyed.append((_SPARK_PART.sub(r"part-\1", str(rel)), f))
        for name, f in sorted(keyed):
            h.update(name.encode() + b"\0" + _file_sha(f).encode() + b"\n")
        out[entry.name] = h.hexdigest()[:16]
    return out


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _relative_outputs(outputs: dict[str, Any], *prefixes: Path) -> dict[str, Any]:
    """Stage outputs are absolute staging paths; in the manifest they are relative to the version dir."""
    rel = {}
    for key, value in outputs.items():
        if isinstance(value, str):
            for prefix in prefixes:
                p = str(prefix)
                if value == p or value.startswith(p + os.sep):
                    value = os.path.relpath(value, p)
                    break
        rel[key] = value
    return rel


def codebook_id_of(stages: dict[str, dict[str, Any]]) -> str | None:
    codebook = stages.get("codebook") or {}
    for section in ("metrics", "outputs"):
        value = (codebook.get(section) or {}).get("codebook_id")
        if value:
            return str(value)
    return None


def publish_version(
    paths: DatasetPaths,
    version: str,
    *,
    stages: list[str],
    manifest_fields: dict[str, Any],
    parent_dir: Path | None = None,
) -> Path:
    """Atomically turn ``_staging/<version>`` into ``<version>`` with its manifest, then move ``latest``.

    Idempotent: an already published version is returned as is (and the pointer completed if a crash
    came between manifest and pointer); a version renamed but not yet given its manifest (a crash
    in between) is completed from its own stage markers.
    """
    staging, final = paths.staging_dir(version), paths.version_dir(version)
    if is_published(final):
        _record_in_latest(paths, version)
        return final
    if staging.is_dir():
        read_markers(staging, stages)  # validate before anything becomes visible
        if final.exists():
            # Leftover of a crashed publish of this same version (no manifest, so never visible).
            shutil.rmtree(final)
        os.rename(staging, final)
    elif not final.is_dir():
        raise PublishError(f"nothing staged for version {version} under {paths.base}")

    markers = read_markers(final, stages)
    stage_section = {
        name: {
            "counts": m.get("counts") or {},
            "metrics": {k: v for k, v in (m.get("metrics") or {}).items() if not k.startswith("_")},
            "outputs": _relative_outputs(m.get("outputs") or {}, staging, final),
            "notes": m.get("notes") or [],
            "config_hash": (m.get("metrics") or {}).get("_config_hash"),
            "wall_seconds": (m.get("metrics") or {}).get("_wall_seconds"),
        }
        for name, m in markers.items()
    }
    parent_version = manifest_fields.get("parent_version")
    manifest = {
        "manifest_format": MANIFEST_FORMAT,
        **manifest_fields,
        "version": version,
        "dataset": paths.dataset,
        "codebook_id": codebook_id_of(stage_section),
        "stages": stage_section,
        "stage_order": list(stages),
        "churn_vs_parent": sid_churn(parent_dir, final) if parent_dir is not None else None,
        "data_fingerprints": data_fingerprints(final),
        "published_from": str(staging),
    }
    if parent_version and parent_dir is None:
        manifest["churn_vs_parent"] = {"available": False, "reason": f"parent {parent_version} not found"}
    atomic_write_text(final / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    _record_in_latest(paths, version)
    log.info("published %s/%s (parent %s)", paths.dataset, version, parent_version)
    return final


def _read_latest(paths: DatasetPaths) -> dict[str, Any]:
    try:
        data = json.loads(paths.latest.read_text())
        if isinstance(data, dict) and isinstance(data.get("history"), list):
            return data
    except (OSError, ValueError):
        pass
    return {"version": None, "history": []}


def _record_in_latest(paths: DatasetPaths, version: str) -> None:
    """Append ``version`` to the publication history and point ``latest`` at it (once per version)."""
    with file_lock(paths.dataset_lock, what=f"dataset {paths.dataset}"):
        data = _read_latest(paths)
        if version in data["history"]:
            return
        data["history"].append(version)
        data["version"] = version
        atomic_write_text(paths.latest, json.dumps(data, indent=2) + "\n")


# -------------------------------------------------------------------------------------- readers


def _published_in_order(paths: DatasetPaths) -> list[str]:
    """Published versions, oldest first: publication history, then any not in it by manifest time."""
    if not paths.base.is_dir():
        return []
    found = {
        d.name: (d / MANIFEST).stat().st_mtime
        for d in paths.base.iterdir()
        if d.is_dir() and not d.name.startswith((".", "_")) and is_published(d)
    }
    history = [v for v in _read_latest(paths)["history"] if v in found]
    rest = sorted((v for v in found if v not in history), key=lambda v: (found[v], v))
    return history + rest


def latest_version_dir(root: Path | str, dataset: str = "sidpipe", exclude: str | None = None) -> Path | None:
    """The most recently published version dir other than ``exclude`` (None if there is none)."""
    paths = DatasetPaths(Path(root), dataset)
    candidates = [v for v in _published_in_order(paths) if v != exclude]
    if not candidates:
        return None
    pointer = _read_latest(paths)["version"]
    chosen = pointer if pointer in candidates else candidates[-1]
    return paths.version_dir(chosen)


def resolve_version(root: Path | str, version: str = "latest", dataset: str = "sidpipe") -> Path:
    """The dir of a published version; ``"latest"`` follows the pointer. Unpublished versions are errors."""
    paths = DatasetPaths(Path(root), dataset)
    if version == LATEST:
        found = latest_version_dir(root, dataset)
        if found is None:
            raise PublishError(f"no published version of {dataset!r} under {root}")
        return found
    path = paths.version_dir(version)
    if not is_published(path):
        known = ", ".join(_published_in_order(paths)) or "none"
        raise PublishError(
            f"version {version!r} of {dataset!r} is not published under {root} (published: {known})"
        )
    return path


def list_versions(root: Path | str, dataset: str = "sidpipe") -> list[dict[str, Any]]:
    """Published versions, oldest first, each with its key facts and flattened counts/metrics."""
    paths = DatasetPaths(Path(root), dataset)
    latest = latest_version_dir(root, dataset)
    rows = []
    for version in _published_in_order(paths):
        m = read_manifest(paths.version_dir(version))
        counts, metrics, gates = {}, {}, {}
        for stage, section in m.get("stages", {}).items():
            for key, value in (section.get("counts") or {}).items():
                counts[f"{stage}.{key}"] = value
            for key, value in (section.get("metrics") or {}).items():
                if isinstance(value, (int, float, str, bool)) or value is None:
                    metrics[f"{stage}.{key}"] = value
            gate = (section.get("metrics") or {}).get("gate")
            if isinstance(gate, dict) and "passed" in gate:
                gates[stage] = gate["passed"]
        churn = m.get("churn_vs_parent") or {}
        rows.append(
            {
                "version": version,
                "latest": latest is not None and latest.name == version,
                "snapshot_id": m.get("snapshot_id"),
                "parent_version": m.get("parent_version"),
                "codebook_id": m.get("codebook_id"),
                "config_hash": m.get("config_hash"),
                "code_version": m.get("code_version"),
                "counts": counts,
                "metrics": metrics,
                "gates": gates,
                "churn": {k: v for k, v in churn.items() if isinstance(v, (int, float))},
                "path": str(paths.version_dir(version)),
            }
        )
    return rows


def load_dataset_dict(root: Path | str, version: str = "latest", dataset: str = "sidpipe"):
    """The published version's Hugging Face ``DatasetDict`` (loaded from disk, offline)."""
    from datasets import Dataset, DatasetDict, load_from_disk

    version_dir = resolve_version(root, version, dataset)
    hf_dir = RunLayout(version_dir).hf_dataset
    if not hf_dir.exists():
        raise PublishError(f"version {version_dir.name} has no Hugging Face dataset at {hf_dir}")
    loaded = load_from_disk(str(hf_dir))
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    return loaded


# ----------------------------------------------------------------------------------------- diffs


def _read_columns(path: Path, columns: list[str]):
    import pyarrow.parquet as pq

    return pq.read_table(str(path), columns=columns)


def sid_churn(old_dir: Path | None, new_dir: Path) -> dict[str, Any]:
    """SID churn between two run dirs, joined on item id.

    ``unchanged_text_sid_changed`` counts items present in both whose catalog ``text_hash`` is the
    same but whose SID differs: it must be 0 under a frozen codebook. ``retired_sids_reused`` counts
    SIDs of removed items that the new version gives to another item (must be 0 too).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from schemas.catalog import C as CAT
    from schemas.sids import C as S

    if old_dir is None:
        return {"available": False, "reason": "no previous version"}
    old_l, new_l = RunLayout(Path(old_dir)), RunLayout(Path(new_dir))
    for layout in (old_l, new_l):
        for table in (layout.sids, layout.catalog):
            if not table.exists():
                return {"available": False, "reason": f"{table} missing"}

    def side(layout: RunLayout) -> pa.Table:
        sids = _read_columns(layout.sids, [S.item_id, S.sid])
        key = pc.binary_join(pc.cast(sids[S.sid], pa.list_(pa.string())), "-")
        sids = pa.table({S.item_id: sids[S.item_id], "sid_key": key})
        catalog = _read_columns(layout.catalog, [CAT.item_id, CAT.text_hash])
        return sids.join(catalog, S.item_id, join_type="left outer")

    old, new = side(old_l), side(new_l)
    both = old.join(new, S.item_id, join_type="inner", left_suffix="_old", right_suffix="_new")
    same_text = pc.equal(both[f"{CAT.text_hash}_old"], both[f"{CAT.text_hash}_new"]).fill_null(False)
    same_sid = pc.equal(both["sid_key_old"], both["sid_key_new"]).fill_null(False)
    moved = both.filter(pc.and_(same_text, pc.invert(same_sid)))
    n_same_text = int(pc.sum(same_text).as_py() or 0)
    removed = old.filter(pc.invert(pc.is_in(old[S.item_id], value_set=new[S.item_id])))
    added = pc.invert(pc.is_in(new[S.item_id], value_set=old[S.item_id]))
    reused = pc.is_in(new["sid_key"], value_set=removed["sid_key"])
    return {
        "available": True,
        "items_old": old.num_rows,
        "items_new": new.num_rows,
        "items_in_both": both.num_rows,
        "unchanged_text": n_same_text,
        "unchanged_text_sid_changed": moved.num_rows,
        "changed_text": both.num_rows - n_same_text,
        "changed_text_sid_changed": int(
            pc.sum(pc.and_(pc.invert(same_text), pc.invert(same_sid))).as_py() or 0
        ),
        "added": int(pc.sum(added).as_py() or 0),
        "removed": removed.num_rows,
        "retired_sids_reused": int(pc.sum(reused).as_py() or 0),
        "examples_sid_changed": sorted(moved[S.item_id].to_pylist())[:10],
    }


def diff_versions(root: Path | str, dataset: str, v1: str, v2: str) -> dict[str, Any]:
    """What changed from ``v1`` to ``v2``: counts per stage side by side, SID churn, codebook change."""
    d1, d2 = resolve_version(root, v1, dataset), resolve_version(root, v2, dataset)
    m1, m2 = read_manifest(d1), read_manifest(d2)
    counts: dict[str, dict[str, list[Any]]] = {}
    for stage in dict.fromkeys([*m1.get("stage_order", []), *m2.get("stage_order", [])]):
        c1 = (m1["stages"].get(stage) or {}).get("counts") or {}
        c2 = (m2["stages"].get(stage) or {}).get("counts") or {}
        counts[stage] = {k: [c1.get(k), c2.get(k)] for k in sorted({*c1, *c2})}
    return {
        "v1": d1.name,
        "v2": d2.name,
        "snapshots": [m1.get("snapshot_id"), m2.get("snapshot_id")],
        "counts": counts,
        "sid_churn": sid_churn(d1, d2),
        "codebook": {
            "v1": m1.get("codebook_id"),
            "v2": m2.get("codebook_id"),
            "changed": m1.get("codebook_id") != m2.get("codebook_id"),
        },
        "config_changed": m1.get("config_hash") != m2.get("config_hash"),
        "data_changed": sorted(
            k
            for k in {*m1.get("data_fingerprints", {}), *m2.get("data_fingerprints", {})}
            if m1.get("data_fingerprints", {}).get(k) != m2.get("data_fingerprints", {}).get(k)
        ),
    }
