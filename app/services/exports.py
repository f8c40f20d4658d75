"""Version exports: a diffusers folder whose `unet/` holds the version's merged weights, as a tar
with a signed manifest listing what the version has forgotten.

Building needs torch, so it runs in a worker (`lethe.export` on the `preview` queue, like
previews): `POST /v1/versions/{id}/export` records an `Export` row and sends the task; the
worker builds the folder with `LETHE_EXPORT_MODULE.build_folder` (`workers.engine.export`),
writes `<data_dir>/exports/<id>.tar` and marks the row completed; `GET /v1/versions/{id}/export`
streams the newest completed tar. Purging a version deletes its tars (`purge_exports`), and a
worker that finishes after a purge deletes its own tar instead of publishing it.

Tar layout: the diffusers folder at the root (`model_index.json`, `unet/`, `text_encoder/`, …),
`lethe/manifest.json` (format `lethe-export/2`: model, version, `forgotten`, sha256 of every
file) and `lethe/manifest.sig` = hex HMAC-SHA256 of the manifest bytes with
LETHE_SIGNING_SECRET.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Export, Model, ModelVersion
from app.db.types import utcnow
from app.errors import Conflict, NotFound
from app.services import dispatch
from app.services.quarantine import ensure_usable
from app.services.registry import get_version
from app.settings import Settings
from app.states import State

FORMAT = "lethe-export/2"
PURGED = "purged"
IN_FLIGHT = (State.QUEUED.value, State.RUNNING.value)


def request_export(session: Session, settings: Settings, version_id: str) -> Export:
    """Queue a build (or return the one queued, running or already built for this version)."""
    version = get_version(session, version_id)
    ensure_usable(version, "export")
    existing = session.scalars(select(Export).where(
        Export.version_id == version.id,
        Export.state.in_([*IN_FLIGHT, State.COMPLETED.value]))
        .order_by(Export.created_at.desc())).first()
    if existing is not None and (existing.state != State.COMPLETED.value
                                 or (existing.path and Path(existing.path).is_file())):
        return existing
    export = Export(version_id=version.id, state=State.QUEUED.value, size_bytes=0, attempts=0)
    session.add(export)
    session.commit()
    dispatch.send_export(export.id)
    return export


def get_export(session: Session, export_id: str) -> Export:
    export = session.get(Export, export_id)
    if export is None:
        raise NotFound(f"no export {export_id!r}")
    return export


def built_tar(session: Session, version_id: str) -> tuple[ModelVersion, Path]:
    """The newest completed export's tar (410 purged, 451 quarantined, 404/409 not built)."""
    version = get_version(session, version_id)
    ensure_usable(version, "export")
    rows = list(session.scalars(select(Export).where(Export.version_id == version.id)
                                .order_by(Export.created_at.desc())))
    for row in rows:
        if row.state == State.COMPLETED.value and row.path and Path(row.path).is_file():
            return version, Path(row.path)
    if any(r.state in IN_FLIGHT for r in rows):
        raise Conflict(f"the export of version {version.number} is still being built; "
                       "poll GET /v1/exports/{id}")
    raise NotFound(f"version {version.number} has no built export; "
                   f"POST /v1/versions/{version.id}/export first")


def export_out(export: Export) -> dict[str, Any]:
    done = export.state == State.COMPLETED.value
    return {"id": export.id, "version_id": export.version_id, "state": export.state,
            "digest": export.digest, "size_bytes": export.size_bytes, "error": export.error,
            "created_at": export.created_at, "finished_at": export.finished_at,
            "download_url": f"/v1/versions/{export.version_id}/export" if done else None,
            "forgotten": (export.manifest or {}).get("forgotten")}


def purge_exports(session: Session, version: ModelVersion) -> list[str]:
    """Delete every built (or half-built) tar of `version`; the rows say `purged`."""
    done = []
    for row in session.scalars(select(Export).where(Export.version_id == version.id)):
        if row.path:
            Path(row.path).unlink(missing_ok=True)
        Path(str(row.path or "") + ".partial").unlink(missing_ok=True)
        row.state, row.path, row.finished_at = PURGED, None, row.finished_at or utcnow()
        done.append(row.id)
    return done


# --- worker side (no torch here: the folder itself is built by LETHE_EXPORT_MODULE) ---------

def manifest_for(model: Model, version: ModelVersion, files: dict[str, str],
                 built: dict[str, Any]) -> bytes:
    return json.dumps({
        "format": FORMAT, "model": model.name,
        "version": {"id": version.id, "number": version.number, "digest": version.digest,
                    "parent_id": version.parent_id, "created_at": version.created_at.isoformat()},
        "forgotten": list(version.erased),
        "unet": built,
        "files": files,
    }, sort_keys=True, indent=2).encode()


def write_tar(folder: Path, out: Path, manifest_of: Any, sign: Any) -> tuple[dict[str, Any], str]:
    """Tar `folder` + `lethe/manifest.json` + `lethe/manifest.sig` into `out` (atomically).

    `manifest_of(files)` returns the manifest bytes; `sign(bytes)` its hex signature.
    Returns (manifest dict, sha256 of the tar)."""
    files: dict[str, str] = {}
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(partial, "w") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            files[name] = _sha256(path)
            tar.add(path, arcname=name, recursive=False)
        manifest = manifest_of(files)
        for name, data in (("lethe/manifest.json", manifest),
                           ("lethe/manifest.sig", sign(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = "sha256:" + _sha256(partial)
    partial.rename(out)
    return json.loads(manifest), digest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
