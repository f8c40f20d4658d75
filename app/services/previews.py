"""Preview jobs: render a few images from a version so a person can see a concept is gone."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.models import Preview
from app.errors import NotFound
from app.schemas.takedowns import PreviewOut, SampleRequest
from app.services import dispatch
from app.services.quarantine import ensure_usable
from app.services.registry import get_version
from app.states import State


def request_samples(session: Session, version_id: str, body: SampleRequest) -> Preview:
    version = get_version(session, version_id)
    ensure_usable(version, "previewing")
    preview = Preview(version_id=version.id, prompt=body.prompt, seed=body.seed, n=body.n,
                      state=State.QUEUED.value, images=[])
    session.add(preview)
    session.commit()
    dispatch.send_preview(preview.id)
    return preview


def get_preview(session: Session, preview_id: str) -> Preview:
    preview = session.get(Preview, preview_id)
    if preview is None:
        raise NotFound(f"no preview {preview_id!r}")
    return preview


def preview_out(preview: Preview, base_url: str) -> PreviewOut:
    urls = [f"{base_url}/v1/samples/{preview.id}/images/{name}" for name in preview.images]
    return PreviewOut(id=preview.id, version_id=preview.version_id, prompt=preview.prompt,
                      seed=preview.seed, n=preview.n, state=preview.state, image_urls=urls,
                      error=preview.error)
