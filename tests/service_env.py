"""Shared set-up for the service tests: a throwaway Postgres database, a fake concept-world
folder, a Redis db number, and the environment a worker subprocess needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379"
REPO = Path(__file__).resolve().parent.parent
CATALOG = [
    {"name": "red tulip", "kind": "object", "related": ["yellow tulip"], "prompts": ["a tulip"]},
    {"name": "yellow tulip", "kind": "object", "related": ["red tulip"], "prompts": []},
    {"name": "van gogh", "kind": "style", "related": [], "prompts": []},
    {"name": "stubborn", "kind": "object", "related": [], "prompts": []},
    {"name": "explode", "kind": "object", "related": [], "prompts": []},
    {"name": "impossible", "kind": "object", "related": [], "prompts": []},
    {"name": "lonely", "kind": "object", "related": [], "prompts": []},
    {"name": "van gogh tulip", "kind": "object", "related": [], "prompts": []},
]


def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_conceptworld(root: Path) -> Path:
    folder = root / "conceptworld"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "catalog.json").write_text(json.dumps(CATALOG))
    return folder


def service_env(db_name: str, data_dir: Path, redis_db: int, **extra: str) -> dict[str, str]:
    env = {
        "LETHE_ENV": "test",
        "LETHE_DATABASE_URL": f"{PG}/{db_name}",
        "LETHE_BROKER_URL": f"{REDIS}/{redis_db}",
        "LETHE_DATA_DIR": str(data_dir),
        "LETHE_ALLOWED_MODEL_ROOT": str(data_dir / "models"),
        "LETHE_CONCEPTWORLD_DIR": str(make_conceptworld(data_dir)),
        "LETHE_ENGINE_MODULE": "tests.stand_in_engine",
        "LETHE_LEASE_SECONDS": "4",
        "LETHE_HEARTBEAT_SECONDS": "0.5",
        "LETHE_RECONCILE_SECONDS": "0.5",
        "LETHE_LOST_MESSAGE_SECONDS": "3",
        "LETHE_LOG_LEVEL": "WARNING",
    }
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, check=True,
                   env={**os.environ, **env}, capture_output=True)
