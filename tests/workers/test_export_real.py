"""Export with a REAL Celery worker and the real folder builder (workers.engine.export) on a tiny
diffusers model: the tar is a diffusers folder whose `unet/` loads with `from_pretrained` and
equals `load_version(base, artifact)`."""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.workers.test_end_to_end import Worker, worker  # noqa: F401 (fixture)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.slow


def _tiny_model_folder(root: Path) -> Path:
    from tests.engine.conftest import tiny_unet
    from workers.conceptworld.model import (
        build_noise_scheduler,
        build_text_encoder,
        save_model_folder,
    )
    from workers.conceptworld.tokenizer import write_tokenizer
    from workers.conceptworld.world import vocabulary_corpus

    torch.manual_seed(0)
    folder = root / "tiny-export"
    tokenizer = write_tokenizer(vocabulary_corpus(), root / "tiny-export-tok")
    save_model_folder(folder, tiny_unet(), build_text_encoder(tokenizer), tokenizer,
                      build_noise_scheduler())
    return folder


def _add_version(model_id: str, folder: Path, tmp_path: Path) -> tuple[str, Path]:
    """A version 1 whose artifact changes two UNet tensors (as an erasure step would)."""
    from diffusers import UNet2DConditionModel

    from app.db.models import ModelVersion
    from app.db.session import session_scope
    from app.services.artifacts import get_store, tree_digest
    from app.settings import get_settings
    from workers.engine.versions import base_digest, save_version

    base = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    edited = copy.deepcopy(base)
    with torch.no_grad():
        edited.conv_in.weight.add_(0.5)
        edited.up_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight.mul_(-1.0)
    save_version(tmp_path / "artifact", base, edited, {"base_digest": base_digest(folder)})
    uri = get_store(get_settings()).put(tmp_path / "artifact", f"{model_id}/export-test")
    digest, size = tree_digest(tmp_path / "artifact")
    with session_scope() as session:
        version = ModelVersion(model_id=model_id, number=1, parent_id=None, job_id=None,
                               erased=["red tulip"], artifact_uri=uri, digest=digest,
                               size_bytes=size, metrics={}, status="ready")
        session.add(version)
        session.flush()
        return version.id, Path(uri.removeprefix("file://"))


def test_export_is_a_loadable_diffusers_folder_with_merged_unet(
        client: TestClient, worker: Worker, data_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from diffusers import UNet2DConditionModel

    from app.settings import get_settings
    from workers.engine.versions import load_version

    folder = _tiny_model_folder(data_dir / "models")
    r = client.post("/v1/models", json={"name": "tiny-export", "path": folder.name})
    assert r.status_code == 201, r.text
    version_id, artifact = _add_version(r.json()["id"], folder, tmp_path)
    worker()  # a real Celery worker on unlearn+preview, real export module (torch)

    queued = client.post(f"/v1/versions/{version_id}/export")
    assert queued.status_code == 202, queued.text
    deadline, export = time.monotonic() + 180, queued.json()
    while export["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        export = client.get(queued.headers["location"]).json()
    assert export["state"] == "completed", export
    assert export["forgotten"] == ["red tulip"]

    got = client.get(f"/v1/versions/{version_id}/export")
    assert got.status_code == 200
    assert "sha256:" + hashlib.sha256(got.content).hexdigest() == export["digest"]
    out = tmp_path / "untarred"
    with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
        tar.extractall(out, filter="data")
    manifest = (out / "lethe/manifest.json").read_bytes()
    sig = (out / "lethe/manifest.sig").read_text()
    assert hmac.compare_digest(sig, hmac.new(get_settings().hmac_key, manifest,
                                             hashlib.sha256).hexdigest())
    meta = json.loads(manifest)
    assert meta["forgotten"] == ["red tulip"] and meta["unet"]["weights"] == "merged"
    for name, sha in meta["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha, name
    assert (out / "model_index.json").is_file() and (out / "text_encoder").is_dir()

    exported: Any = UNet2DConditionModel.from_pretrained(out, subfolder="unet")
    base: Any = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    merged: Any = load_version(base, artifact)
    expected = merged.state_dict()
    state = exported.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert not torch.equal(state["conv_in.weight"], base.state_dict()["conv_in.weight"])
