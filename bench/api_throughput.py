"""GET /v1/takedowns/{id} throughput as a ratio to a bare FastAPI endpoint, plus POST latency.

Both apps run under the same uvicorn command (one process, no access log) on this
machine in the same run; a throwaway Postgres database and Redis db 12 back the real API.
Usage: python -m bench.api_throughput [--seconds 5] [--concurrency 16] [--posts 200]
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer

from tests.service_env import (
    REPO,
    create_database,
    drop_database,
    make_conceptworld,
    migrate,
    service_env,
)

RESULTS = REPO / "bench" / "results" / "api_throughput.json"
UVICORN = ["-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]


def serve(target: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, *UVICORN, "--port", str(port), *target], cwd=REPO,
                            env={**os.environ, **env})
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


async def hammer(url: str, seconds: float, concurrency: int) -> float:
    """Requests per second for GET `url` from `concurrency` keep-alive clients."""
    count = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
        async def loop() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                r = await client.get(url)
                assert r.status_code == 200, r.text
                count += 1
        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


def post_latencies(url: str, n: int) -> list[float]:
    body = {"model": "conceptworld", "concept": "red tulip", "kind": "object",
            "legal_basis": "copyright", "claimant": {"name": "B", "email": "b@example.com"}}
    out = []
    with httpx.Client() as client:
        for _ in range(n):
            started = time.perf_counter()
            assert client.post(url, json=body).status_code == 202
            out.append((time.perf_counter() - started) * 1000)
    return out


def main(seconds: float = 5.0, concurrency: int = 16, posts: int = 200) -> None:
    db = create_database("lethe_bench")
    data = Path(f"/tmp/lethe-bench-{os.getpid()}")
    env = service_env(db, data, redis_db=12, LETHE_ENV="production", LETHE_LOG_LEVEL="WARNING")
    make_conceptworld(data)
    procs = []
    try:
        migrate(env)
        procs.append(serve(["--factory", "app.main:create_app"], 8811, env))
        procs.append(serve(["bench.bare_app:app"], 8812, env))
        td = httpx.post("http://127.0.0.1:8811/v1/takedowns", json={
            "model": "conceptworld", "concept": "red tulip", "kind": "object",
            "legal_basis": "copyright", "claimant": {"name": "B", "email": "b@example.com"}}).json()
        asyncio.run(hammer("http://127.0.0.1:8812/bare", 1, concurrency))  # warm up
        bare = asyncio.run(hammer("http://127.0.0.1:8812/bare", seconds, concurrency))
        get = asyncio.run(hammer(f"http://127.0.0.1:8811/v1/takedowns/{td['id']}", seconds,
                                 concurrency))
        lat = sorted(post_latencies("http://127.0.0.1:8811/v1/takedowns", posts))
        result = {
            "bare_rps": round(bare, 1), "get_takedown_rps": round(get, 1),
            "ratio": round(get / bare, 3), "goal_ratio": 0.5,
            "post_p50_ms": round(statistics.median(lat), 2),
            "post_p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 2),
            "seconds": seconds, "concurrency": concurrency, "posts": posts,
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared with a training job)",
            "server": "uvicorn, 1 process, h11; Postgres 15 + Redis on localhost",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        drop_database(db)


if __name__ == "__main__":
    typer.run(main)
