"""Where version artifacts live: a local folder (default) or an S3-compatible bucket (boto3).

An artifact is a folder (weights.safetensors + manifest.json). Its digest is
sha256 over the sorted (relative path, sha256(file bytes)) pairs, so it names the content,
not the location.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Any, Protocol

from app.settings import Settings


def tree_digest(folder: Path) -> tuple[str, int]:
    """Return ("sha256:<hex>", total size in bytes) of every file under `folder`."""
    outer, size = hashlib.sha256(), 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        inner = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                inner.update(chunk)
        size += path.stat().st_size
        outer.update(path.relative_to(folder).as_posix().encode() + b"\0" + inner.digest())
    return "sha256:" + outer.hexdigest(), size


def job_prefix(model_id: str, job_id: str) -> str:
    """Where a job's attempts store their artifacts (services/orphans.py sweeps it)."""
    return f"{model_id}/{job_id}"


def artifact_key(model_id: str, job_id: str, digest: str) -> str:
    """Keyed by content as well as job: an attempt that died after its upload left its own
    (different) artifact, which a retry must neither reuse nor collide with."""
    return f"{job_prefix(model_id, job_id)}/{digest.removeprefix('sha256:')[:16]}"


class ArtifactStore(Protocol):
    def put(self, folder: Path, key: str) -> str:
        """Copy `folder` to `key` and return its URI. Keys name their content (the worker
        puts the digest in them), so one already there holds the same bytes and is kept."""
        ...

    def fetch(self, uri: str) -> Path:
        """Return a local folder holding the artifact (downloaded if needed)."""
        ...

    def delete(self, uri: str) -> None:
        """Remove every byte of the artifact (and any local cached copy); idempotent."""
        ...

    def list_under(self, prefix: str) -> list[str]:
        """The keys `prefix/<name>` artifacts were put at (one level below `prefix`)."""
        ...

    def uri_of(self, key: str) -> str:
        """The URI `put` returns for `key`."""
        ...


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def put(self, folder: Path, key: str) -> str:
        target = self.root / key
        if not target.exists():
            tmp = self.root / f".tmp-{uuid.uuid4().hex}"
            shutil.copytree(folder, tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(target)  # atomic: readers see the whole folder or nothing
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # a twin delivery got there first
        return self.uri_of(key)

    def fetch(self, uri: str) -> Path:
        return Path(uri.removeprefix("file://"))

    def delete(self, uri: str) -> None:
        shutil.rmtree(self.fetch(uri), ignore_errors=True)

    def list_under(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        if not folder.is_dir():
            return []
        return sorted(f"{prefix}/{p.name}" for p in folder.iterdir() if p.is_dir())

    def uri_of(self, key: str) -> str:
        return f"file://{self.root / key}"


class S3ArtifactStore:
    """Needs `boto3` (not a core dependency); credentials come from the usual AWS variables."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None, cache: Path) -> None:
        import boto3  # optional dependency, only for this backend

        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url)
        self.bucket, self.prefix, self.cache = bucket, prefix.strip("/"), cache

    def put(self, folder: Path, key: str) -> str:
        base = f"{self.prefix}/{key}"
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.client.upload_file(str(path), self.bucket,
                                    f"{base}/{path.relative_to(folder).as_posix()}")
        return self.uri_of(key)

    def uri_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}/{key}"

    def fetch(self, uri: str) -> Path:
        bucket, _, base = uri.removeprefix("s3://").partition("/")
        target = self.cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
        if target.exists():
            return target
        tmp = target.with_name(target.name + f".tmp-{uuid.uuid4().hex}")
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base)
        for page in pages:
            for obj in page.get("Contents", []):
                dest = tmp / obj["Key"][len(base) + 1:]
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(bucket, obj["Key"], str(dest))
        tmp.rename(target)
        return target

    def delete(self, uri: str) -> None:
        bucket, _, base = uri.removeprefix("s3://").partition("/")
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base)
        for page in pages:
            for obj in page.get("Contents", []):
                self.client.delete_object(Bucket=bucket, Key=obj["Key"])
        shutil.rmtree(self.cache / hashlib.sha256(uri.encode()).hexdigest()[:16],
                      ignore_errors=True)

    def list_under(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/{prefix}/", Delimiter="/")
        return sorted(f"{prefix}/{common['Prefix'].rstrip('/').rsplit('/', 1)[-1]}"
                      for page in pages for common in page.get("CommonPrefixes", []))


def get_store(settings: Settings) -> ArtifactStore:
    if settings.artifact_backend == "s3":
        return S3ArtifactStore(settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url,
                               settings.data_dir / "cache")
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return LocalArtifactStore(settings.artifacts_dir)
