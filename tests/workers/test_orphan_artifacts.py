"""Artifacts no version names (an attempt fenced or dead after storing its artifact) are
deleted once their job has ended and the grace has passed; registered ones never are."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.db.models import Job
from app.db.session import session_scope
from app.services.artifacts import artifact_key, get_store, job_prefix, tree_digest
from app.services.reconciler import reconcile_once
from app.settings import get_settings
from tests.workers.test_jobs import submit
from workers.tasks import run_unlearn_job


def stored_by_a_lost_attempt(model_id: str, job_id: str, like: Path, tmp: Path) -> str:
    """What a fenced attempt leaves: its own (different) artifact under the job's key."""
    folder = tmp / f"lost-{job_id}"
    shutil.copytree(like, folder)
    with (folder / "manifest.json").open("a") as fh:
        fh.write("\n")
    digest, _ = tree_digest(folder)
    return get_store(get_settings()).put(folder, artifact_key(model_id, job_id, digest))


def test_an_artifact_no_version_names_is_deleted_once_its_job_has_ended(
        client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    store = get_store(settings)
    done = submit(client)
    assert run_unlearn_job(done["job_id"], settings) == "completed"
    version = client.get(f"/v1/takedowns/{done['id']}").json()["result"]["version"]
    registered = client.get(f"/v1/versions/{version}").json()
    model_id, registered_dir = done["model_id"], store.fetch(registered["artifact_uri"])
    orphan = stored_by_a_lost_attempt(model_id, done["job_id"], registered_dir, tmp_path)
    waiting = submit(client, "van gogh")  # not run: an attempt may still register its upload
    in_flight = stored_by_a_lost_attempt(model_id, waiting["job_id"], registered_dir, tmp_path)
    assert sorted(store.list_under(job_prefix(model_id, done["job_id"]))) == sorted(
        [registered["artifact_uri"], orphan])

    assert reconcile_once(settings).orphans_deleted == []  # ended less than the grace ago
    monkeypatch.setattr(settings, "orphan_grace_seconds", 0.0)
    assert reconcile_once(settings).orphans_deleted == [orphan]
    assert reconcile_once(settings).orphans_deleted == []  # each job is swept once
    assert store.list_under(job_prefix(model_id, done["job_id"])) == [
        registered["artifact_uri"]]
    assert tree_digest(registered_dir)[0] == registered["digest"]
    assert client.get(f"/v1/versions/{version}/download").status_code == 200
    assert store.list_under(job_prefix(model_id, waiting["job_id"])) == [in_flight]
    audit = client.get("/v1/audit?action=artifact.orphan_deleted").json()["items"]
    assert [(e["target_id"], e["data"]["uri"]) for e in audit] == [(done["job_id"], orphan)]
    with session_scope() as session:
        job = session.get(Job, done["job_id"])
        assert job is not None and job.artifacts_swept_at is not None
