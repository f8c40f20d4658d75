"""The artifact stores: what is put is listed under its job, read back whole, and deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from app.services.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    artifact_key,
    job_prefix,
    tree_digest,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield LocalArtifactStore(tmp_path / "artifacts")
        return
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = S3ArtifactStore("lethe-artifacts", "versions", None, tmp_path / "cache")
        s3.client.create_bucket(Bucket="lethe-artifacts")
        yield s3


def artifact(folder: Path, weights: bytes) -> tuple[Path, str]:
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(weights)
    (folder / "sub" / "manifest.json").write_text('{"method": "lacu"}')
    return folder, tree_digest(folder)[0]


def test_a_job_lists_what_its_attempts_put_and_delete_removes_every_byte(
        store: ArtifactStore, tmp_path: Path) -> None:
    first, first_digest = artifact(tmp_path / "a", b"\x00" * 64)
    second, second_digest = artifact(tmp_path / "b", b"\x01" * 64)
    other, other_digest = artifact(tmp_path / "c", b"\x02" * 64)
    for folder, digest in ((first, first_digest), (second, second_digest)):
        key = artifact_key("m", "job-1", digest)
        assert store.put(folder, key) == store.uri_of(key)
    keys = sorted(artifact_key("m", "job-1", d) for d in (first_digest, second_digest))
    other_key = artifact_key("m", "job-10", other_digest)  # job-1's key is a prefix of it
    assert store.put(other, other_key) == store.uri_of(other_key)
    assert store.list_under(job_prefix("m", "job-1")) == keys
    assert store.list_under(job_prefix("m", "job-10")) == [other_key]
    assert store.list_under(job_prefix("m", "job-2")) == []
    fetched = tree_digest(store.fetch(store.uri_of(artifact_key("m", "job-1", first_digest))))
    assert fetched[0] == first_digest

    for key in keys:
        store.delete(store.uri_of(key))
        store.delete(store.uri_of(key))  # idempotent
    assert store.list_under(job_prefix("m", "job-1")) == []
    assert store.list_under(job_prefix("m", "job-10")) == [other_key]
    assert tree_digest(store.fetch(store.uri_of(other_key)))[0] == other_digest
