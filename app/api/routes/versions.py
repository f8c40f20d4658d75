from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, status
from fastapi.responses import FileResponse

from app.api.deps import SessionDep, SettingsDep, TakedownsRead, TakedownsWrite
from app.errors import NotFound
from app.schemas.registry import VersionOut
from app.schemas.takedowns import PreviewOut, SampleRequest
from app.services import previews, registry

router = APIRouter(tags=["versions"])


@router.get("/versions/{version_id}", response_model=VersionOut)
def get_version(version_id: str, session: SessionDep, _: TakedownsRead) -> VersionOut:
    return VersionOut.model_validate(registry.get_version(session, version_id))


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
