"""Sending wake-up messages to Celery. Messages are hints: the database says what must run,
and the reconciler re-sends anything a lost message left behind."""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)

UNLEARN_TASK, UNLEARN_QUEUE = "lethe.unlearn", "unlearn"
PREVIEW_TASK, PREVIEW_QUEUE = "lethe.preview", "preview"
EXPORT_TASK = "lethe.export"  # on the preview queue: CPU/GPU work a person is waiting for


def send(task: str, queue: str, object_id: str, *, countdown: float | None = None) -> bool:
    from workers.celery_app import celery_app  # no torch behind this import

    try:
        celery_app.send_task(task, args=[object_id], queue=queue, countdown=countdown,
                             retry=False)
    except Exception as exc:  # broker down: the row is committed, the reconciler will resend
        log.warning("dispatch.failed", task=task, id=object_id, error=str(exc))
        return False
    return True


def send_unlearn(job_id: str, *, countdown: float | None = None) -> bool:
    return send(UNLEARN_TASK, UNLEARN_QUEUE, job_id, countdown=countdown)


def send_preview(preview_id: str) -> bool:
    return send(PREVIEW_TASK, PREVIEW_QUEUE, preview_id)


def send_export(export_id: str) -> bool:
    return send(EXPORT_TASK, PREVIEW_QUEUE, export_id)
