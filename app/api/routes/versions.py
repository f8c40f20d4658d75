from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from app.api.deps import ModelsAdmin, SessionDep, SettingsDep, TakedownsRead, TakedownsWrite
from app.errors import NotFound
from app.schemas.compliance import PurgeIn
from app.schemas.registry import ExportOut, LegalHoldIn, VersionOut
from app.schemas.takedowns import PreviewOut, SampleRequest
from app.services import evidence, exports, previews, quarantine, registry

router = APIRouter(tags=["versions"])


@router.get("/versions/{version_id}", response_model=VersionOut)
def get_version(version_id: str, session: SessionDep, _: TakedownsRead) -> VersionOut:
    return VersionOut.model_validate(registry.get_version(session, version_id))


TAR: dict[int | str, dict[str, Any]] = {200: {"content": {"application/x-tar": {}}}}


def _tar_response(path: Path, name: str) -> FileResponse:
    return FileResponse(path, media_type="application/x-tar", filename=name,
                        background=BackgroundTask(path.unlink, missing_ok=True))


@router.get("/versions/{version_id}/download", response_class=FileResponse, responses=TAR)
def download_version(version_id: str, session: SessionDep, settings: SettingsDep,
                     _: ModelsAdmin) -> FileResponse:
    """The version's own artifact (changed tensors + manifest) as a tar; 410 once purged,
    451 while quarantined."""
    version = registry.get_version(session, version_id)
    path = evidence.version_tar(session, settings, version)
    return _tar_response(path, f"version-{version.number}.tar")


@router.post("/versions/{version_id}/export", status_code=status.HTTP_202_ACCEPTED,
             response_model=ExportOut)
def request_export(version_id: str, session: SessionDep, settings: SettingsDep,
                   response: Response, _: ModelsAdmin) -> ExportOut:
    """Build a diffusers folder of this version (its `unet/` holds the merged weights) on the
    `preview` queue; poll `Location` until `completed`, then GET this path. Returns the build
    already queued or done for the version, if any. 410 purged, 451 quarantined."""
    export = exports.request_export(session, settings, version_id)
    response.headers["Location"] = f"/v1/exports/{export.id}"
    return ExportOut(**exports.export_out(export))


@router.get("/exports/{export_id}", response_model=ExportOut)
def get_export(export_id: str, session: SessionDep, _: ModelsAdmin) -> ExportOut:
    return ExportOut(**exports.export_out(exports.get_export(session, export_id)))


@router.get("/versions/{version_id}/export", response_class=FileResponse, responses=TAR)
def export_version(version_id: str, session: SessionDep, _: ModelsAdmin) -> FileResponse:
    """The built export: a diffusers folder as a tar with `lethe/manifest.json` (what was
    forgotten) signed in `lethe/manifest.sig` (docs/compliance.md). 404 until built (409 while
    building), 410 purged, 451 quarantined."""
    version, path = exports.built_tar(session, version_id)
    return FileResponse(path, media_type="application/x-tar",
                        filename=f"version-{version.number}-export.tar")


@router.post("/versions/{version_id}/purge", response_model=VersionOut)
def purge_version(version_id: str, body: PurgeIn, session: SessionDep, settings: SettingsDep,
                  _: ModelsAdmin) -> VersionOut:
    """Delete the version's tensors and previews; the row stays as a tombstone (audited)."""
    version = registry.get_version(session, version_id)
    quarantine.purge(session, settings, version, reason=body.reason)
    session.commit()
    return VersionOut.model_validate(version)


@router.post("/versions/{version_id}/hold", response_model=VersionOut)
def place_hold(version_id: str, body: LegalHoldIn, session: SessionDep,
               _: ModelsAdmin) -> VersionOut:
    """A legal hold: the version is never purged, by hand or after its quarantine's grace,
    until the hold is released (409 if held already, 410 once purged)."""
    version = quarantine.place_hold(session, registry.get_version(session, version_id),
                                    body.reason)
    session.commit()
    return VersionOut.model_validate(version)


@router.delete("/versions/{version_id}/hold", response_model=VersionOut)
def release_hold(version_id: str, session: SessionDep, _: ModelsAdmin) -> VersionOut:
    """End the hold (409 if there is none); a quarantined version is purged again."""
    version = quarantine.release_hold(session, registry.get_version(session, version_id))
    session.commit()
    return VersionOut.model_validate(version)


@router.post("/versions/{version_id}/samples", status_code=status.HTTP_202_ACCEPTED,
             response_model=PreviewOut)
def request_samples(version_id: str, body: SampleRequest, session: SessionDep,
                    request: Request, _: TakedownsWrite) -> PreviewOut:
    preview = previews.request_samples(session, version_id, body)
    return previews.preview_out(preview, str(request.base_url).rstrip("/"))


@router.get("/samples/{preview_id}", response_model=PreviewOut)
def get_samples(preview_id: str, session: SessionDep, request: Request,
                _: TakedownsRead) -> PreviewOut:
    preview = previews.get_preview(session, preview_id)
    return previews.preview_out(preview, str(request.base_url).rstrip("/"))


@router.get("/samples/{preview_id}/images/{name}", response_class=FileResponse)
def get_sample_image(preview_id: str, name: str, session: SessionDep,
                     settings: SettingsDep, _: TakedownsRead) -> FileResponse:
    preview = previews.get_preview(session, preview_id)
    if name not in preview.images:
        raise NotFound(f"preview {preview_id} has no image {name!r}")
    return FileResponse(Path(settings.previews_dir) / preview.id / name, media_type="image/png")
