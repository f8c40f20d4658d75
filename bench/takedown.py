"""Seconds per takedown, end to end, on the embedded default with the real engine.

Starts `lethe serve` (SQLite, local broker, one worker) on a fresh data folder, files the
takedowns one after another the moment the API is ready, and prints one JSON object: each
takedown's seconds from POST to its final state, the engine's stages, and its gate metrics.
The first takedown includes the worker's warm-up (model, judge, base evaluation images).
Usage: lethe bench takedown [--concepts circle,blip] [--out bench/results/takedown.json]
"""

from __future__ import annotations

import os
import platform
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from app.settings import CONCEPTWORLD_DIR, REPO_ROOT
from app.states import is_terminal

CLAIMANT = {"name": "Bench", "email": "bench@example.com"}
BENCH_KEY = "lethe_bench-takedown-admin-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def embedded_service(data_dir: Path, admin_key: str, env: dict[str, str] | None = None,
                     start_timeout: float = 120) -> Iterator[httpx.Client]:
    """`lethe serve` on a free port, as a client authorised with `admin_key`; stopped after.
    `env` adds `LETHE_*` settings; it must announce its URL on its first line of output.
    The service's and its worker's output goes to `<data_dir>.serve.log`; if the body raises,
    its last lines are printed, so a failure says what the service was doing."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir.with_name(f"{data_dir.name}.serve.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    child_env.update({"PYTHONUNBUFFERED": "1", "LETHE_CONCEPTWORLD_DIR": str(CONCEPTWORLD_DIR),
                      "LETHE_LOG_LEVEL": "INFO", "LETHE_ADMIN_KEY": admin_key, **(env or {})})
    log_path.write_text("")
    with log_path.open("a") as log:  # appending, as the copy of its output below does
        proc = subprocess.Popen(
            [sys.executable, "-c", "from lethe.cli import app; app()", "serve", "--port",
             str(port), "--data-dir", str(data_dir)], cwd=REPO_ROOT, env=child_env,
            start_new_session=True, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        announced = _first_line(proc, start_timeout)
        if url not in announced:
            raise RuntimeError(f"lethe serve did not print its URL {url}: {announced!r}")
        assert proc.stdout is not None
        # Never let its output block it; the API's own log lines go to stdout.
        threading.Thread(target=_copy_lines, args=(proc.stdout, log_path), daemon=True).start()
        with httpx.Client(base_url=url, timeout=30,
                          headers={"Authorization": f"Bearer {admin_key}"}) as client:
            wait_ready(client, proc)
            yield client
    except BaseException:
        tail = log_path.read_text(errors="replace").splitlines()[-60:]
        print(f"--- last lines of {log_path} ---", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _copy_lines(stream: IO[str], path: Path) -> None:
    with path.open("a") as out:
        for line in stream:
            out.write(line)
            out.flush()


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line `proc` prints, or RuntimeError after `timeout` s (a start-up that hangs
    must fail, not wait forever)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"lethe serve printed nothing in {timeout:.0f} s")
    return proc.stdout.readline()


def wait_ready(client: httpx.Client, proc: subprocess.Popen[str], timeout: float = 60
               ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("lethe serve exited")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"lethe serve not ready after {timeout:.0f} s")


def run_takedown(client: Any, concept: str, kind: str, timeout: float = 600
                 ) -> tuple[dict[str, Any], float]:
    """Submit a takedown and wait for a final state: (takedown, seconds end to end).
    `client` is an httpx.Client or a TestClient; the timeout only catches one that never ends."""
    started = time.monotonic()
    td = client.post("/v1/takedowns", json={"model": "conceptworld", "concept": concept,
                                            "kind": kind, "legal_basis": "copyright",
                                            "claimant": CLAIMANT}).json()
    while time.monotonic() - started < timeout:
        td = client.get(f"/v1/takedowns/{td['id']}").json()
        if is_terminal(td["state"]):
            break
        time.sleep(0.5)
    return td, time.monotonic() - started


def summary(td: dict[str, Any], seconds: float) -> dict[str, Any]:
    metrics = (td.get("result") or {}).get("metrics", {})
    return {"concept": td["concept"], "state": td["state"], "seconds": round(seconds, 1),
            "stages": {k: round(v, 1) for k, v in metrics.get("seconds", {}).items()},
            "forget_acc": metrics.get("forget_acc"),
            "related_retention": metrics.get("related_retention"),
            "general_retention": metrics.get("general_retention"), "error": td.get("error")}


def run(concepts: list[tuple[str, str]]) -> dict[str, Any]:
    """Takedowns of (concept, kind) in order on a fresh embedded service."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            embedded_service(Path(tmp) / "data", BENCH_KEY) as client:
        for concept, kind in concepts:
            rows.append(summary(*run_takedown(client, concept, kind)))
    return {"command": "lethe bench takedown", "machine": f"{platform.machine()}, "
            f"{os.cpu_count()} cores", "takedowns": rows}
