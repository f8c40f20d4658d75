"""Artifacts no version names (an attempt fenced or dead after storing its artifact) are
deleted once their job has ended and the grace has passed; registered ones never are."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db.models import Job, ModelVersion
from app.db.session import session_scope
from app.services.artifacts import (
    LocalArtifactStore,
    artifact_key,
    get_store,
    job_prefix,
    tree_digest,
)
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


def completed_with_an_orphan(client: TestClient, tmp: Path, concept: str = "red tulip"
                             ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A completed takedown, its registered version, and what a lost attempt left."""
    settings = get_settings()
    done = submit(client, concept)
    assert run_unlearn_job(done["job_id"], settings) == "completed"
    version_id = client.get(f"/v1/takedowns/{done['id']}").json()["result"]["version"]
    version = client.get(f"/v1/versions/{version_id}").json()
    like = get_store(settings).fetch(version["artifact_uri"])
    return done, version, stored_by_a_lost_attempt(done["model_id"], done["job_id"], like, tmp)


def keys_of(model_id: str, job_id: str) -> list[str]:
    return get_store(get_settings()).list_under(job_prefix(model_id, job_id))


def test_an_artifact_no_version_names_is_deleted_once_its_job_has_ended(
        client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    store = get_store(settings)
    done, version, orphan = completed_with_an_orphan(client, tmp_path)
    model_id, registered_dir = done["model_id"], store.fetch(version["artifact_uri"])
    waiting = submit(client, "van gogh")  # not run: an attempt may still register its upload
    in_flight = stored_by_a_lost_attempt(model_id, waiting["job_id"], registered_dir, tmp_path)
    assert sorted(store.uri_of(k) for k in keys_of(model_id, done["job_id"])) == sorted(
        [version["artifact_uri"], orphan])

    assert reconcile_once(settings).orphans_deleted == []  # ended less than the grace ago
    monkeypatch.setattr(settings, "orphan_grace_seconds", 0.0)
    assert reconcile_once(settings).orphans_deleted == [orphan]
    assert reconcile_once(settings).orphans_deleted == []  # each job is swept once
    assert [store.uri_of(k) for k in keys_of(model_id, done["job_id"])] == [
        version["artifact_uri"]]
    assert tree_digest(registered_dir)[0] == version["digest"]
    assert client.get(f"/v1/versions/{version['id']}/download").status_code == 200
    assert [store.uri_of(k) for k in keys_of(model_id, waiting["job_id"])] == [in_flight]
    audit = client.get("/v1/audit?action=artifact.orphan_deleted").json()["items"]
    assert [(e["target_id"], e["data"]["uri"]) for e in audit] == [(done["job_id"], orphan)]
    with session_scope() as session:
        job = session.get(Job, done["job_id"])
        assert job is not None and job.artifacts_swept_at is not None


def test_a_version_reached_by_another_path_is_never_an_orphan(
        client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data folder was moved and the old path left as a symlink: the version's URI names
    the old path, the store lists the new one. The version is matched by its key's name."""
    settings = get_settings()
    done, version, orphan = completed_with_an_orphan(client, tmp_path)
    old_root = tmp_path / "old-artifacts"
    old_root.symlink_to(settings.artifacts_dir.resolve(), target_is_directory=True)
    old_uri = version["artifact_uri"].replace(str(settings.artifacts_dir.resolve()),
                                              str(old_root))
    with session_scope() as session:
        row = session.get(ModelVersion, version["id"])
        assert row is not None
        row.artifact_uri = old_uri
    monkeypatch.setattr(settings, "orphan_grace_seconds", 0.0)
    assert reconcile_once(settings).orphans_deleted == [orphan]
    assert tree_digest(Path(old_uri.removeprefix("file://")))[0] == version["digest"]


def test_a_deletion_that_fails_is_not_audited_and_is_tried_again(
        client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    done, _, orphan = completed_with_an_orphan(client, tmp_path)
    monkeypatch.setattr(settings, "orphan_grace_seconds", 0.0)
    monkeypatch.setattr(LocalArtifactStore, "delete", lambda self, uri: None)  # a full disk
    swept = reconcile_once(settings)
    assert swept.orphans_deleted == []
    assert client.get("/v1/audit?action=artifact.orphan_deleted").json()["items"] == []
    with session_scope() as session:
        job = session.get(Job, done["job_id"])
        assert job is not None and job.artifacts_swept_at is None
    monkeypatch.undo()
    monkeypatch.setattr(settings, "orphan_grace_seconds", 0.0)
    assert reconcile_once(settings).orphans_deleted == [orphan]
