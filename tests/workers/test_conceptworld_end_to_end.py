"""The acceptance flow with the REAL engine on the shipped concept-world model.

Skipped until `workers.engine.service_api` exists and the shipped model folder has its catalog.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.settings import CONCEPTWORLD_DIR, get_settings

ENGINE_READY = (importlib.util.find_spec("workers.engine.service_api") is not None
                and (CONCEPTWORLD_DIR / "catalog.json").exists())
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ENGINE_READY, reason="workers.engine.service_api or the shipped "
                       "concept-world model is not available yet"),
]


def test_real_engine_takedown_completes(service_db: dict[str, str], worker_real: None) -> None:
    from app.main import create_app
    from tests.conftest import create_key_all, wipe_tables
    from workers.engine.service_api import load_catalog

    wipe_tables()  # start from an empty registry pointing at the real model

    concept = load_catalog(CONCEPTWORLD_DIR)[0]["name"]
    with TestClient(create_app(reconcile=True)) as client:
        client.headers["Authorization"] = f"Bearer {create_key_all()}"
        started = time.monotonic()
        td = client.post("/v1/takedowns", json={
            "model": "conceptworld", "concept": concept, "kind": "object",
            "legal_basis": "copyright", "claimant": {"name": "A", "email": "a@example.com"}}).json()
        while time.monotonic() - started < 180:
            td = client.get(f"/v1/takedowns/{td['id']}").json()
            if td["state"] in ("completed", "failed", "crashed"):
                break
            time.sleep(1)
        elapsed = time.monotonic() - started
        assert td["state"] == "completed", td
        # The goal is ≤ 60 s on a quiet machine (measured and reported in the README); the
        # bound here leaves room for a CI machine busy with other tests.
        assert elapsed <= 120, elapsed
        stages = td["result"]["metrics"].get("seconds", {})
        print(f"real-engine takedown end to end: {elapsed:.1f} s; engine stages: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
        assert td["result"]["metrics"]["forget_acc"][concept] <= 0.05


@pytest.fixture
def worker_real(service_db: dict[str, str]) -> Iterator[None]:
    import signal
    import subprocess
    import sys

    from tests.service_env import REPO

    # A real step keeps two cores busy for a minute: the 4 s test lease would expire whenever the
    # heartbeat thread waits a few seconds for a core, and the job would start over.
    env = {**os.environ, **service_db, "LETHE_CONCEPTWORLD_DIR": str(CONCEPTWORLD_DIR),
           "LETHE_ENGINE_MODULE": "workers.engine.service_api", "LETHE_LEASE_SECONDS": "20"}
    os.environ["LETHE_CONCEPTWORLD_DIR"] = str(CONCEPTWORLD_DIR)
    os.environ["LETHE_LEASE_SECONDS"] = "20"
    get_settings.cache_clear()
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app",
                             "worker", "-Q", "unlearn,preview", "-c", "1", "-l", "WARNING"],
                            cwd=REPO, env=env, start_new_session=True)
    yield None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    os.environ["LETHE_CONCEPTWORLD_DIR"] = service_db["LETHE_CONCEPTWORLD_DIR"]
    os.environ["LETHE_LEASE_SECONDS"] = service_db["LETHE_LEASE_SECONDS"]
    get_settings.cache_clear()
