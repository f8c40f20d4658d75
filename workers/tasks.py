"""Celery tasks. The engine (torch) is imported lazily inside the task bodies only.

`run_unlearn_job` is the whole erasure step, top to bottom: claim the lineage, run the engine
with a heartbeat, store and verify the artifact, then commit version + alias + takedowns in one
transaction. Every database write is fenced, so a duplicate delivery changes nothing.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog
from celery import signals

from app.db.models import Export, Model, ModelVersion, Preview
from app.db.session import session_scope
from app.db.types import utcnow
from app.services import dispatch, exports, jobs
from app.services.artifacts import artifact_key, get_store, tree_digest
from app.services.evidence import sign_manifest
from app.services.gate import evaluate_gate
from app.services.quarantine import withdrawn
from app.settings import Settings, get_settings
from app.states import State
from workers.celery_app import celery_app

log = structlog.get_logger(__name__)
BUSY_RETRY_SECONDS = 2.0
_parent_cache: dict[str, Path] = {}  # the last fetched parent artifact, kept between steps


def engine_module(settings: Settings) -> ModuleType:
    """The engine's service API (workers.engine.service_api unless LETHE_ENGINE_MODULE says)."""
    return importlib.import_module(settings.engine_module)


_warmed = threading.Event()


@signals.worker_process_init.connect  # each prefork child, and the solo pool's one process
def warm_up_engine(**_: object) -> None:
    """Load the built-in model in the background; the first job waits on the engine's lock.

    In a thread because Celery kills a prefork child whose start-up takes over a few seconds.
    """
    settings = get_settings()
    if _warmed.is_set() or not settings.worker_warm_up or not settings.conceptworld_dir.is_dir():
        return
    _warmed.set()

    def run() -> None:
        try:
            engine = engine_module(settings)  # imports torch: seconds, hence the thread
            if hasattr(engine, "warm_up"):
                seconds = engine.warm_up(settings.conceptworld_dir)
                log.info("worker.warmed_up", seconds=round(seconds, 1))
        except Exception:  # a job will load what it needs and report the error itself
            log.exception("worker.warm_up_failed")

    threading.Thread(target=run, daemon=True, name="warm-up").start()


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@celery_app.task(name=dispatch.UNLEARN_TASK, acks_late=True, reject_on_worker_lost=True)
def unlearn(job_id: str) -> str:
    return run_unlearn_job(job_id, get_settings())


@celery_app.task(name=dispatch.PREVIEW_TASK, acks_late=True, reject_on_worker_lost=True)
def preview(preview_id: str) -> str:
    return run_preview(preview_id, get_settings())


@celery_app.task(name=dispatch.EXPORT_TASK, acks_late=True, reject_on_worker_lost=True)
def export(export_id: str) -> str:
    return run_export(export_id, get_settings())


class Lease:
    """Heartbeat thread: renews the lease and watches for cancel requests."""

    def __init__(self, settings: Settings, claimed: jobs.ClaimedJob) -> None:
        self.settings, self.claimed = settings, claimed
        self.lost = threading.Event()
        self.cancel = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease")

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def should_stop(self) -> bool:
        return self.lost.is_set() or self.cancel.is_set()

    def _run(self) -> None:
        interval = min(1.0, self.settings.heartbeat_seconds)
        while not self._done.wait(interval):
            try:
                with session_scope() as session:
                    held, cancel = jobs.heartbeat(session, self.settings, self.claimed)
            except Exception as exc:  # database blip: keep trying until the lease runs out
                log.warning("lease.heartbeat_failed", error=str(exc))
                continue
            if not held:
                self.lost.set()
            if cancel:
                self.cancel.set()


def run_unlearn_job(job_id: str, settings: Settings) -> str:
    owner = worker_identity()
    structlog.contextvars.bind_contextvars(job_id=job_id)
    try:
        with session_scope() as session:
            claimed = jobs.claim(session, settings, job_id, owner)
    except jobs.Busy:
        _wait_turn(job_id, settings)
        return "busy"
    if claimed is None:
        log.info("job.skipped", reason="nothing to do or held elsewhere")
        return "skipped"
    ran_instead = jobs.ran_instead(claimed, job_id)
    if ran_instead:
        log.info("job.ran_instead", more_urgent=claimed.job_id)
        structlog.contextvars.bind_contextvars(job_id=claimed.job_id)
    log.info("job.claimed", fence=claimed.fence, concepts=[r.concept for r in claimed.requests])
    try:
        return _erase_and_commit(claimed, settings)
    finally:
        if ran_instead:  # its turn comes once the step that ran in its place has ended
            _wait_turn(job_id, settings)
        structlog.contextvars.unbind_contextvars("job_id")


def _wait_turn(job_id: str, settings: Settings) -> None:
    """Send the job's message again shortly: its model is busy, or ran a more urgent step."""
    try:
        with session_scope() as session:
            jobs.mark_waiting(session, settings, job_id)
    except Exception as exc:  # a database blip: the message still goes; at worst a copy more
        log.warning("job.mark_waiting_failed", error=str(exc))
    dispatch.send_unlearn(job_id, countdown=BUSY_RETRY_SECONDS)


def _erase_and_commit(claimed: jobs.ClaimedJob, settings: Settings) -> str:
    store = get_store(settings)
    out_dir = settings.staging_dir / f"{claimed.job_id}-{claimed.fence}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    progress = ProgressWriter(settings, claimed)
    with Lease(settings, claimed) as lease:
        # Under the lease: the first import (torch) can outlast it, waiting on the warm-up
        # thread's import lock, and the claim's lease must not run out meanwhile.
        engine = engine_module(settings)
        try:
            outcome = engine.erase_step(
                Path(claimed.model_dir), _parent_artifact(store, claimed.parent_artifact_uri),
                [engine.ErasureRequest(concept=r.concept, prompts=r.prompts,
                                       neighbors=r.neighbors) for r in claimed.requests],
                claimed.previously_erased, out_dir, seed=settings.seed,
                progress=progress, should_stop=lease.should_stop)
        except engine.Cancelled:
            return _stopped(claimed, settings, lease)
        except engine.NoSafeTarget as exc:
            return _refused(claimed, settings, lease, exc)
        except Exception as exc:
            if lease.lost.is_set():
                return "fenced"
            log.exception("job.engine_error")
            with session_scope() as session:
                jobs.fail(session, claimed, f"{type(exc).__name__}: {exc}")
            return "failed"
        if lease.should_stop():
            return _stopped(claimed, settings, lease)
        progress.flush({"stage": "saving", "step": 1, "total": 1, "losses": {},
                        "eta_seconds": 0.0}, force=True)
        step = _store_verified(store, claimed, outcome, Path(outcome.artifact_dir))
        gate = evaluate_gate(outcome.metrics, [r.concept for r in claimed.requests], settings)
        with session_scope() as session:
            version = jobs.commit_version(session, claimed, step, gate)
    shutil.rmtree(out_dir, ignore_errors=True)
    if version is None:
        log.warning("job.fenced_at_commit")
        return "fenced"
    if isinstance(version, jobs.ParentMoved):
        dispatch.send_unlearn(version.job_id)
        log.warning("job.parent_moved", production=version.production_version_id)
        return "parent_moved"
    log.info("job.committed", version=version.number, production=gate.passed,
             reasons=gate.reasons)
    return "completed" if gate.passed else "gate_failed"


def _stopped(claimed: jobs.ClaimedJob, settings: Settings, lease: Lease) -> str:
    if lease.lost.is_set():
        log.warning("job.lease_lost")
        return "fenced"
    with session_scope() as session:
        again = jobs.cancelled(session, settings, claimed)
    for job_id in again:
        dispatch.send_unlearn(job_id)
    log.info("job.cancelled", requeued_jobs=again)
    return "cancelled"


def _refused(claimed: jobs.ClaimedJob, settings: Settings, lease: Lease, exc: Any) -> str:
    if lease.lost.is_set():
        return "fenced"
    with session_scope() as session:
        again = jobs.refused(session, settings, claimed, exc.concept,
                             f"{type(exc).__name__}: {exc}")
    for job_id in again:
        dispatch.send_unlearn(job_id)
    log.warning("job.refused", concept=exc.concept, requeued_jobs=again)
    return "refused"


def _parent_artifact(store: Any, uri: str | None) -> Path | None:
    if uri is None:
        return None
    if uri not in _parent_cache:
        _parent_cache.clear()
        _parent_cache[uri] = store.fetch(uri)
    return _parent_cache[uri]


def _store_verified(store: Any, claimed: jobs.ClaimedJob, outcome: Any,
                    artifact_dir: Path) -> jobs.StepResult:
    """Copy the artifact to the store, then re-read the stored copy and compare digests."""
    digest, size = tree_digest(artifact_dir)
    uri = store.put(artifact_dir, artifact_key(claimed.model_id, claimed.job_id, digest))
    stored_digest, _ = tree_digest(store.fetch(uri))
    if stored_digest != digest:
        raise RuntimeError(f"artifact digest mismatch after upload: {stored_digest} != {digest}")
    metrics = dict(outcome.metrics)
    metrics["engine_digest"] = outcome.digest
    return jobs.StepResult(artifact_uri=uri, digest=digest, size_bytes=size,
                           erased=list(outcome.erased), metrics=metrics,
                           targets=dict(outcome.targets), neighbours=dict(outcome.neighbours),
                           covered_by=dict(outcome.covered_by))


class ProgressWriter:
    """The engine's progress callback: throttled writes to the takedowns and their event log."""

    def __init__(self, settings: Settings, claimed: jobs.ClaimedJob) -> None:
        self.settings, self.claimed = settings, claimed
        self._last, self._stage = 0.0, ""

    def __call__(self, event: Any) -> None:
        self.flush({"stage": event.stage, "step": event.step, "total": event.total,
                    "losses": dict(event.losses), "eta_seconds": event.eta_seconds})

    def flush(self, raw: dict[str, Any], *, force: bool = False) -> None:
        now, total = time.monotonic(), max(int(raw["total"]), 1)
        last_step = raw["step"] >= total
        if not (force or last_step or raw["stage"] != self._stage
                or now - self._last >= self.settings.progress_min_interval):
            return
        self._last, self._stage = now, raw["stage"]
        progress = {"stage": raw["stage"], "step": raw["step"], "total_steps": total,
                    "percent": round(100.0 * raw["step"] / total, 1),
                    "eta_seconds": raw["eta_seconds"],
                    "losses": {k: float(v) for k, v in raw["losses"].items()}}
        try:
            with session_scope() as session:
                jobs.record_progress(session, self.claimed, progress)
        except Exception as exc:  # progress is best effort; the lease decides liveness
            log.warning("progress.write_failed", error=str(exc))


def run_preview(preview_id: str, settings: Settings) -> str:
    with session_scope() as session:
        row = session.get(Preview, preview_id, with_for_update=True)  # one copy renders
        if row is None or row.state != State.QUEUED.value:
            return "skipped"
        version = session.get(ModelVersion, row.version_id)
        assert version is not None
        if withdrawn(version):
            row.state, row.images = State.FAILED.value, []
            row.error = "the version was purged or quarantined before its images were drawn"
            return row.state
        row.state, row.started_at = State.RUNNING.value, utcnow()
        row.attempts = (row.attempts or 0) + 1

        model = session.get(Model, version.model_id)
        assert model is not None
        model_dir, uri, version_id = Path(model.path), version.artifact_uri, version.id
        prompt, seed, n = row.prompt, row.seed, row.n
    try:
        engine = engine_module(settings)
        artifact = _parent_artifact(get_store(settings), uri)
        images = engine.render_samples(model_dir, artifact, prompt, seed, n)
        folder = settings.previews_dir / preview_id
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for i, png in enumerate(images):
            (folder / f"{i}.png").write_bytes(png)
            names.append(f"{i}.png")
        state, error = State.COMPLETED.value, None
    except Exception as exc:
        log.exception("preview.failed", preview=preview_id)
        names, state, error = [], State.FAILED.value, f"{type(exc).__name__}: {exc}"
    with session_scope() as session:
        # The version's lock, as a purge takes it before deleting previews: either it deletes
        # these images, or this sees it and deletes them, never one drawn after it.
        locked = session.get(ModelVersion, version_id, with_for_update=True)
        row = session.get(Preview, preview_id)
        assert row is not None and locked is not None
        if withdrawn(locked):
            shutil.rmtree(settings.previews_dir / preview_id, ignore_errors=True)
            names, state = [], State.FAILED.value
            error = "the version was purged or quarantined while its images were drawn"
        row.state, row.images, row.error = state, names, error
    return state


def run_export(export_id: str, settings: Settings) -> str:
    """Build a version's diffusers folder (merged UNet), tar it with its signed manifest."""
    with session_scope() as session:
        row = session.get(Export, export_id, with_for_update=True)  # one copy builds
        if row is None or row.state != State.QUEUED.value:
            return "skipped"
        version = session.get(ModelVersion, row.version_id)
        assert version is not None
        if withdrawn(version):
            row.state, row.finished_at = State.FAILED.value, utcnow()
            row.error = "the version was purged or quarantined before its export was built"
            return row.state
        row.state, row.started_at = State.RUNNING.value, utcnow()
        row.attempts = (row.attempts or 0) + 1
        model = session.get(Model, version.model_id)
        assert model is not None
        model_dir, uri, version_id = Path(model.path), version.artifact_uri, version.id
    work = settings.staging_dir / f"export-{export_id}-{uuid.uuid4().hex[:8]}"
    tar = settings.exports_dir / f"{export_id}.tar"
    try:
        builder = importlib.import_module(settings.export_module)
        artifact = get_store(settings).fetch(uri) if uri else None
        work.parent.mkdir(parents=True, exist_ok=True)
        built = builder.build_folder(model_dir, artifact, work / "folder")
        with session_scope() as session:
            current = session.get(ModelVersion, version_id)
            model = session.get(Model, current.model_id) if current else None
            assert current is not None and model is not None
        # No transaction open while the tar is written: on SQLite one holds the write lock,
        # and a large model's tar would keep intake waiting past its busy timeout.
        manifest, digest = exports.write_tar(
            work / "folder", tar,
            lambda files: exports.manifest_for(model, current, files, dict(built)),
            lambda data: sign_manifest(settings, data))
        state, error = State.COMPLETED.value, None
    except Exception as exc:
        log.exception("export.failed", export=export_id)
        tar.unlink(missing_ok=True)
        state, error, manifest, digest = State.FAILED.value, f"{type(exc).__name__}: {exc}", \
            None, None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with session_scope() as session:
        # Lock the version row: a purge takes the same lock before deleting exports, so either
        # it sees this tar (and deletes it) or this sees the purge (and deletes the tar itself).
        locked = session.get(ModelVersion, version_id, with_for_update=True)
        row = session.get(Export, export_id)
        assert row is not None and locked is not None
        if state == State.COMPLETED.value and (locked.purged_at is not None
                                               or row.state == exports.PURGED):
            tar.unlink(missing_ok=True)
            state, error = exports.PURGED, "the version was purged while its export was built"
        row.state, row.error, row.finished_at = state, error, utcnow()
        if state == State.COMPLETED.value:
            row.path, row.digest, row.manifest = str(tar), digest, manifest
            row.size_bytes = tar.stat().st_size
    log.info("export.done", export=export_id, state=state)
    return state
