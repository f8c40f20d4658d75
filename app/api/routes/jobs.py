"""Erasure steps (jobs): what each merged, its attempts, worker and the version it made."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import SessionDep, TakedownsRead
from app.schemas.takedowns import JobOut
from app.services import jobs, registry
from app.states import State

router = APIRouter(prefix="/jobs", tags=["takedowns"])


@router.get("", response_model=list[JobOut])
def list_jobs(session: SessionDep, _: TakedownsRead,
              model: Annotated[str | None, Query(max_length=200,
                                                 description="model id or name")] = None,
              state: State | None = None,
              before: Annotated[str | None, Query(max_length=36, description=(
                  "the last job id of the previous page: the next page starts after it"))] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[JobOut]:
    """Newest first: e.g. `?model=conceptworld&state=running` is the model's step under way.
    An empty page is the end."""
    model_id = registry.get_model(session, model).id if model else None
    found = jobs.list_jobs(session, model_id=model_id, state=state, before=before, limit=limit)
    return [JobOut.model_validate(view) for view in jobs.job_views(session, found)]


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, session: SessionDep, _: TakedownsRead) -> JobOut:
    return JobOut.model_validate(jobs.job_views(session, [jobs.get_job(session, job_id)])[0])
