"""The acceptance flow with the REAL engine on the shipped concept-world model: on Postgres +
Redis + a Celery worker process, and on the embedded default (`lethe serve`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.settings import CONCEPTWORLD_DIR, get_settings
from bench.takedown import embedded_service, run_takedown
from tests.conftest import restore_env, sse_events
from tests.service_env import REPO

pytestmark = pytest.mark.slow

ADMIN_KEY = "lethe_embedded-real-engine-key-0123456789abcdef"
Client = TestClient | httpx.Client


def check_completed_takedown(client: Client, td: dict[str, Any], elapsed: float,
                             erased: list[str]) -> None:
    """Completed, forgot `erased[-1]` within the gate, events in order to 100 %, and a clean
    lineage base → one version per erased concept with `production` on the newest."""
    assert td["state"] == "completed", td
    metrics = td["result"]["metrics"]
    stages = metrics.get("seconds", {})
    print(f"real-engine takedown of {erased[-1]!r} end to end: {elapsed:.1f} s; engine stages: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    assert metrics["forget_acc"][erased[-1]] <= 0.05
    settings = get_settings()
    assert metrics["related_retention"] >= settings.gate_min_related_retention
    assert metrics["general_retention"] >= settings.gate_min_general_retention

    evs = sse_events(client, td["id"])
    states = [d["state"] for k, d in evs if k == "state"]
    assert states == ["received", "queued", "running", "evaluating", "completed"]
    percents = [d["percent"] for k, d in evs if k == "progress"]
    assert percents == sorted(percents) and percents[-1] == 100.0

    versions = client.get("/v1/models/conceptworld/versions").json()
    assert [v["number"] for v in versions] == list(range(len(erased) + 1))
    for parent, child in zip(versions, versions[1:], strict=False):
        assert child["parent_id"] == parent["id"]
    assert versions[-1]["erased"] == erased
    model = client.get("/v1/models/conceptworld").json()
    assert model["production_version_id"] == versions[-1]["id"]


def test_real_engine_takedown_on_postgres_redis_and_celery(service_db: dict[str, str],
                                                           worker_real: None) -> None:
    from app.main import create_app
    from tests.conftest import create_key_all, wipe_tables

    wipe_tables()  # start from an empty registry pointing at the real model
    with TestClient(create_app(reconcile=True)) as client:
        client.headers["Authorization"] = f"Bearer {create_key_all()}"
        # the first takedown after the worker started, then one on the version it made
        td, elapsed = run_takedown(client, "circle", "object")
        check_completed_takedown(client, td, elapsed, ["circle"])
        td, elapsed = run_takedown(client, "blip", "character")
        check_completed_takedown(client, td, elapsed, ["circle", "blip"])


def test_real_engine_takedown_on_the_embedded_default(tmp_path: Path) -> None:
    with embedded_service(tmp_path / "data", ADMIN_KEY) as client:
        td, elapsed = run_takedown(client, "circle", "object")
        check_completed_takedown(client, td, elapsed, ["circle"])


@pytest.fixture
def worker_real(service_db: dict[str, str]) -> Iterator[None]:
    # A real step keeps two cores busy for a minute: the 4 s test lease would expire whenever the
    # heartbeat thread waits a few seconds for a core, and the job would start over.
    overrides = {"LETHE_CONCEPTWORLD_DIR": str(CONCEPTWORLD_DIR), "LETHE_LEASE_SECONDS": "20"}
    env = {**os.environ, **service_db, **overrides,
           "LETHE_ENGINE_MODULE": "workers.engine.service_api"}
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    get_settings.cache_clear()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A",
                                 "workers.celery_app:celery_app", "worker", "-Q",
                                 "unlearn,preview", "-c", "1", "-l", "WARNING"],
                                cwd=REPO, env=env, start_new_session=True)
        yield None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        restore_env(saved)
