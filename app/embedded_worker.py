"""The worker `lethe serve` runs beside its API: the broker's queues made before it starts, and
the process started again whenever it dies (nothing else would, and takedowns would wait)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import structlog
from celery import Celery

from app.settings import REPO_ROOT

log = structlog.get_logger(__name__)
WORKER_COMMAND = [sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app",
                  "worker", "-Q", "unlearn,preview", "-c", "1", "--pool", "solo",
                  "-l", "WARNING", "--without-gossip", "--without-mingle",
                  "--without-heartbeat"]
MAX_RESTART_DELAY = 30.0
STEADY_SECONDS = 60.0  # a worker that ran this long died of something new: restart after 1 s


def declare_queues(celery: Celery | None = None) -> None:
    """Create the broker's queues from this one process. On the SQLite broker the API's first
    publish and a starting worker each insert a missing queue's row, and a worker that loses
    that race dies ("Unrecoverable error: UNIQUE constraint failed: kombu_queue.name")."""
    from workers.celery_app import celery_app  # no torch behind this import

    target = celery or celery_app
    with target.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in target.conf.task_queues:
            queue(channel).declare()


class SupervisedWorker:
    """One Celery worker process, started again (after a growing pause if it keeps dying
    young) until `stop`. A job it held when it died is run again once its lease expires."""

    def __init__(self, poll_seconds: float = 0.5) -> None:
        self.poll_seconds = poll_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True, name="worker-watch")

    def start(self) -> None:
        self._spawn()
        self._watchdog.start()

    def stop(self, grace_seconds: float = 10) -> None:
        self._stopping.set()
        with self._lock:
            if self._process is not None:
                stop_process(self._process, grace_seconds)
        if self._watchdog.is_alive():
            self._watchdog.join(timeout=5)

    def _spawn(self) -> None:
        # Its own session: a terminal's Ctrl-C or hang-up reaches `lethe serve` alone, which
        # stops the worker; a worker that also caught it would exit and be started again.
        self._process = subprocess.Popen(WORKER_COMMAND, cwd=REPO_ROOT, env=os.environ.copy(),
                                         start_new_session=True)
        self._started_at = time.monotonic()

    def _watch(self) -> None:
        delay = 0.5  # doubled before the first wait: 1 s, 2 s, 4 s … for a worker dying young
        while not self._stopping.wait(self.poll_seconds):
            process = self._process
            if process is None or process.poll() is None:
                continue
            lived = time.monotonic() - self._started_at
            delay = 1.0 if lived > STEADY_SECONDS else min(delay * 2, MAX_RESTART_DELAY)
            log.warning("worker.died", exit_code=process.returncode, seconds=round(lived, 1),
                        restart_in=delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self._spawn()
                except OSError as exc:  # e.g. out of memory: keep trying, never give up
                    log.warning("worker.start_failed", error=str(exc))


def stop_process(process: subprocess.Popen[bytes], grace_seconds: float = 10) -> None:
    """Stop a worker; a warm shutdown waits for the running job, so kill it after a grace
    period — the job's lease expires and the next start runs it again, nothing is lost."""
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
