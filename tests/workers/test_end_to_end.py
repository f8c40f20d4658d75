"""End to end: the API in-process, a REAL Celery worker process, real Postgres and Redis.

The worker runs the stand-in engine (tests/stand_in_engine.py, same interface as
workers.engine.service_api) so these run without torch; test_conceptworld_end_to_end.py runs the
real engine when it is importable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from tests.conftest import sse_events
from tests.service_env import REPO

CLAIMANT = {"name": "A", "email": "a@example.com"}
Worker = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def worker(service_db: dict[str, str]) -> Iterator[Worker]:
    redis.Redis.from_url(service_db["LETHE_BROKER_URL"]).flushdb()
    procs: list[subprocess.Popen[bytes]] = []

    def start(step_seconds: float = 0.05) -> subprocess.Popen[bytes]:
        env = {**os.environ, **service_db, "LETHE_TEST_STEP_SECONDS": str(step_seconds)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app", "worker",
             "-Q", "unlearn,preview", "-c", "1", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "WARNING"],
            cwd=REPO, env=env, start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        kill(proc)


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def submit(client: TestClient, concept: str = "red tulip") -> dict[str, Any]:
    r = client.post("/v1/takedowns", json={"model": "conceptworld", "concept": concept,
                                           "kind": "object", "legal_basis": "copyright",
                                           "claimant": CLAIMANT})
    assert r.status_code == 202, r.text
    return r.json()


def wait_for(client: TestClient, td_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        td = client.get(f"/v1/takedowns/{td_id}").json()
        if td["state"] in states:
            return td
        time.sleep(0.2)
    raise AssertionError(f"takedown {td_id} stuck in {td['state']}")


def lineage_ok(client: TestClient) -> list[dict[str, Any]]:
    vs = client.get("/v1/models/conceptworld/versions").json()
    assert [v["number"] for v in vs] == list(range(len(vs))), "version numbers have a gap"
    for parent, child in zip(vs, vs[1:], strict=False):
        assert child["parent_id"] == parent["id"]
    return vs


def test_takedown_completes_with_ordered_progress(live_client: TestClient, worker: Worker) -> None:
    worker()
    started = time.monotonic()
    td = submit(live_client)
    done = wait_for(live_client, td["id"], {"completed", "failed", "crashed"})
    assert done["state"] == "completed", done
    assert time.monotonic() - started < 60
    assert done["result"]["metrics"]["forget_acc"]["red tulip"] <= 0.05
    evs = sse_events(live_client, td["id"])
    states = [d["state"] for k, d in evs if k == "state"]
    assert states == ["received", "queued", "running", "evaluating", "completed"]
    training = [d["percent"] for k, d in evs if k == "progress" and d["stage"] == "training"]
    assert training == sorted(training) and training[-1] == 100.0
    vs = lineage_ok(live_client)
    model = live_client.get("/v1/models/conceptworld").json()
    assert model["production_version_id"] == vs[-1]["id"]
    # Preview of the new version through the preview queue.
    r = live_client.post(f"/v1/versions/{vs[-1]['id']}/samples", json={"prompt": "a tulip", "n": 2})
    assert r.status_code == 202
    for _ in range(100):
        preview = live_client.get(f"/v1/samples/{r.json()['id']}").json()
        if preview["state"] == "completed":
            break
        time.sleep(0.2)
    assert len(preview["image_urls"]) == 2
    image = live_client.get(preview["image_urls"][0].replace("http://testserver", ""))
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_two_takedowns_end_in_one_clean_lineage(live_client: TestClient, worker: Worker) -> None:
    a, b = submit(live_client), submit(live_client, "van gogh")
    worker()
    for td in (a, b):
        assert wait_for(live_client, td["id"], {"completed", "failed"})["state"] == "completed"
    vs = lineage_ok(live_client)
    assert set(vs[-1]["erased"]) == {"red tulip", "van gogh"}


def test_cancel_queued_and_running(live_client: TestClient, worker: Worker) -> None:
    queued = submit(live_client)
    assert live_client.post(f"/v1/takedowns/{queued['id']}/cancel").json()["state"] == "cancelled"
    worker(step_seconds=0.5)
    running = submit(live_client, "van gogh")
    wait_for(live_client, running["id"], {"running"})
    time.sleep(1.0)
    asked = time.monotonic()
    assert live_client.post(f"/v1/takedowns/{running['id']}/cancel").status_code == 202
    assert wait_for(live_client, running["id"], {"cancelled", "completed"})["state"] == "cancelled"
    assert time.monotonic() - asked < 5
    assert len(lineage_ok(live_client)) == 1  # no version added


def test_sigkill_worker_mid_training_completes_once(live_client: TestClient,
                                                    worker: Worker) -> None:
    first = worker(step_seconds=0.3)
    td = submit(live_client)
    wait_for(live_client, td["id"], {"running"})
    time.sleep(1.5)
    kill(first)  # the whole worker, main process and child: no graceful requeue
    worker(step_seconds=0.05)
    done = wait_for(live_client, td["id"], {"completed", "failed", "crashed"})
    assert done["state"] == "completed", done
    vs = lineage_ok(live_client)
    assert len(vs) == 2
    states = [d["state"] for k, d in sse_events(live_client, td["id"]) if k == "state"]
    assert states.count("completed") == 1 and "queued" in states[2:]


def test_flushed_redis_loses_nothing(live_client: TestClient, worker: Worker,
                                     service_db: dict[str, str]) -> None:
    tds = [submit(live_client), submit(live_client, "van gogh")]
    redis.Redis.from_url(service_db["LETHE_BROKER_URL"]).flushdb()  # messages gone
    worker()
    for td in tds:
        assert wait_for(live_client, td["id"], {"completed", "failed"})["state"] == "completed"
    lineage_ok(live_client)
