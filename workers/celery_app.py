"""Celery application: queues `unlearn` (GPU) and `preview`; messages are wake-ups only."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from app.settings import get_settings

settings = get_settings()
celery_app = Celery("lethe", broker=settings.celery_broker_url, include=["workers.tasks"])
celery_app.conf.update(
    task_queues=[Queue("unlearn"), Queue("preview")],
    task_default_queue="unlearn",
    task_acks_late=True,  # a message is acked only when the task returns...
    task_reject_on_worker_lost=True,  # ...and is redelivered if the worker process dies
    worker_prefetch_multiplier=1,  # one GPU step reserved per process, never a backlog
    task_ignore_result=True,  # state lives in the database, not a result backend
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=3,
    worker_hijack_root_logger=False,
)
if celery_app.conf.broker_url.startswith("redis"):
    # Steps can outlast Redis' default 1 h visibility timeout; the DB lease guards duplicates.
    celery_app.conf.broker_transport_options = {"visibility_timeout": 6 * 3600}
