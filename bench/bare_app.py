"""The baseline for bench/api_throughput.py: a bare FastAPI endpoint, no database."""

from fastapi import FastAPI

app = FastAPI()
BODY = {"id": "00000000-0000-0000-0000-000000000000", "state": "queued", "concept": "red tulip"}


@app.get("/bare")
async def bare() -> dict[str, str]:
    return BODY
