"""Version artifacts: the UNet tensors that differ from the base model, the text encoder's token
rows that do (tokens.py), and a JSON manifest.

Loading a version = base folder + its tensors. Every version stores its difference from the
*base*, not from its parent, so versions never depend on one another and purging one never
breaks another. Digests are verified on load.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

from workers.engine.loading import LoadedModel, Phrase
from workers.engine.tokens import TokenRows, with_rows

WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
# Keys of the token rows among the UNet's tensors (no UNet key starts with "text_encoder.")
ROW_IDS, ROW_VALUES = "text_encoder.token_rows.ids", "text_encoder.token_rows.values"


class ArtifactError(ValueError):
    """The artifact is missing, corrupt, or was made for another base model."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_digest(model_folder: Path) -> str:
    """Identity of the base UNet weights a version applies to."""
    unet_dir = Path(model_folder) / "unet"
    files = sorted(unet_dir.glob("*.safetensors")) or sorted(unet_dir.glob("*.bin"))
    h = hashlib.sha256()
    for f in files:
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def changed_tensors(base: UNet2DConditionModel, edited: UNet2DConditionModel
                    ) -> dict[str, torch.Tensor]:
    base_state = base.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in edited.state_dict().items()
            if not torch.equal(v.cpu(), base_state[k].cpu())}


def save_version(out_dir: Path, base: UNet2DConditionModel, edited: UNet2DConditionModel,
                 manifest: dict[str, object], *, token_rows: TokenRows | None = None
                 ) -> dict[str, object]:
    """Write weights + manifest into a fresh folder (renamed into place, so never half-written).

    `token_rows`: the text encoder's rows that differ from the base model's."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ArtifactError(f"{out_dir} is not empty; versions are never overwritten")
    tensors = changed_tensors(base, edited)
    if token_rows is not None and len(token_rows):
        tensors |= {ROW_IDS: token_rows.ids.contiguous(), ROW_VALUES: token_rows.values}
    # a step whose training diverged draws noise; with no judge to fail its gate (Stable
    # Diffusion), it must not become a version
    broken = sorted(k for k, v in tensors.items() if v.is_floating_point()
                    and not bool(torch.isfinite(v).all()))
    if broken:
        raise ArtifactError(f"the edited weights hold NaN or infinity ({', '.join(broken)}): "
                            f"the step's training diverged, and no version is written")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp / WEIGHTS))
    full = dict(manifest)
    full["weights_sha256"] = sha256_file(tmp / WEIGHTS)
    full["tensors"] = sorted(tensors)
    if token_rows is not None and token_rows.phrases:
        full["token_phrases"] = [{"text": p.text, "token_ids": list(p.token_ids), "id": p.id}
                                 for p in token_rows.phrases]
    full["size_bytes"] = (tmp / WEIGHTS).stat().st_size
    (tmp / MANIFEST).write_text(json.dumps(full, indent=1, sort_keys=True))
    _fsync_dir(tmp)
    if out_dir.exists():
        out_dir.rmdir()
    tmp.rename(out_dir)
    return full


def read_manifest(artifact: Path) -> dict[str, object]:
    path = Path(artifact) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{artifact} has no {MANIFEST}")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def artifact_digest(artifact: Path) -> str:
    """sha256 over the manifest file, which itself pins the weights' sha256."""
    return sha256_file(Path(artifact) / MANIFEST)


def load_version(base: UNet2DConditionModel, artifact: Path, *, expected_base: str | None = None
                 ) -> UNet2DConditionModel:
    """A copy of `base` with the artifact's UNet tensors applied, after checking digests;
    `base` itself where the version changed none (`load_version_parts`)."""
    return _applied(base, Path(artifact), _verified(Path(artifact), expected_base)[1])


def load_token_rows(artifact: Path, *, expected_base: str | None = None) -> TokenRows:
    """The artifact's text-encoder token rows (none for a version that edited the UNet only)."""
    return _rows(*_verified(Path(artifact), expected_base))


def load_version_parts(base: UNet2DConditionModel, artifact: Path, *,
                       expected_base: str | None = None
                       ) -> tuple[TokenRows, UNet2DConditionModel]:
    """The artifact's token rows and a copy of `base` with its UNet tensors applied, from one
    verified read; `base` itself where the version changed no UNet tensor (token rows only):
    no second UNet in memory, and the planning's predictions of `base` (distance.py) hold."""
    manifest, tensors = _verified(Path(artifact), expected_base)
    return _rows(manifest, tensors), _applied(base, Path(artifact), tensors)


def load_version_model(model: LoadedModel, artifact: Path, *, expected_base: str | None = None
                       ) -> tuple[LoadedModel, UNet2DConditionModel]:
    """A version as the engine uses it: the model view holding its token rows (`model` itself
    when it has none) and its UNet; `model` is the base."""
    rows, unet = load_version_parts(model.unet, artifact, expected_base=expected_base)
    return with_rows(model, rows), unet


def _verified(artifact: Path, expected_base: str | None
              ) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    manifest = read_manifest(artifact)
    weights = artifact / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{artifact} has no {WEIGHTS} (purged?)")
    if sha256_file(weights) != manifest.get("weights_sha256"):
        raise ArtifactError(f"{weights} does not match the digest in its manifest")
    if expected_base and manifest.get("base_digest") not in (None, expected_base):
        raise ArtifactError(f"{artifact} was made for another base model")
    return manifest, load_file(str(weights))


def _rows(manifest: dict[str, object], tensors: dict[str, torch.Tensor]) -> TokenRows:
    if ROW_IDS not in tensors:
        return TokenRows(torch.zeros(0, dtype=torch.long), torch.zeros(0, 0))
    saved = manifest.get("token_phrases") or []
    assert isinstance(saved, list)
    phrases = tuple(Phrase(str(p["text"]), tuple(int(i) for i in p["token_ids"]), int(p["id"]))
                    for p in saved)
    return TokenRows(tensors[ROW_IDS], tensors[ROW_VALUES], phrases)


def _applied(base: UNet2DConditionModel, artifact: Path, tensors: dict[str, torch.Tensor]
             ) -> UNet2DConditionModel:
    tensors = {k: v for k, v in tensors.items() if k not in (ROW_IDS, ROW_VALUES)}
    if not tensors:  # the engine edits copies only: sharing the base is safe
        return base
    edited = copy.deepcopy(base)
    state = edited.state_dict()
    unknown = set(tensors) - set(state)
    if unknown:
        raise ArtifactError(f"{artifact} has tensors the base UNet lacks: {sorted(unknown)[:3]}")
    edited.load_state_dict({**state, **{k: v.to(state[k].device) for k, v in tensors.items()}})
    return edited.eval().requires_grad_(False)


def _fsync_dir(folder: Path) -> None:
    for f in folder.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
