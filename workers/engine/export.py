"""Export a version as a plain diffusers folder: the registered base folder with `unet/` replaced
by the merged UNet (base weights + the version's changed tensors, `versions.load_version_parts`),
written with `UNet2DConditionModel.save_pretrained`, and `text_encoder/` by the merged text
encoder where the version edited token rows (tokens.py). Anyone can load the result with
`UNet2DConditionModel.from_pretrained(folder, subfolder="unet")` (or a whole pipeline) without
Lethe; the un-erased base UNet weights are not in it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from safetensors import safe_open

from workers.engine.tokens import TokenRows
from workers.engine.versions import base_digest, load_version_parts, read_manifest

UNET, TEXT_ENCODER, TOKENIZER = "unet", "text_encoder", "tokenizer"


def _base_dtype(model_dir: Path) -> torch.dtype | None:
    """The dtype the base UNet is stored in, so the export is not silently up-cast."""
    for path in sorted((model_dir / UNET).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                dtype: torch.dtype = f.get_tensor(key).dtype
                return dtype
    return None


def build_folder(model_dir: Path, artifact: Path | None, out_dir: Path) -> dict[str, object]:
    """Write the diffusers folder of (base `model_dir` + `artifact`) to `out_dir` (must not
    exist). `artifact` None means version 0: the base folder as registered. Returns what the
    manifest records about the UNet."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; exports are built into a fresh folder")
    if artifact is None:
        shutil.copytree(model_dir, out_dir)
        return {"weights": "base", "base_digest": base_digest(model_dir)}
    expected = base_digest(model_dir)
    dtype = _base_dtype(model_dir)
    base: Any = UNet2DConditionModel.from_pretrained(model_dir, subfolder=UNET, torch_dtype=dtype)
    rows, merged = load_version_parts(base, Path(artifact), expected_base=expected)
    replaced = ([UNET] + ([TEXT_ENCODER] if len(rows) else [])
                + ([TOKENIZER] if rows.phrases else []))
    shutil.copytree(model_dir, out_dir,  # everything but the un-erased components
                    ignore=lambda d, names: replaced if Path(d) == model_dir else [])
    merged.save_pretrained(out_dir / UNET, safe_serialization=True)
    if len(rows):
        _write_text_encoder(model_dir, out_dir, rows)
    manifest = read_manifest(Path(artifact))
    return {"weights": "merged", "base_digest": expected, "token_rows": len(rows),
            "version_weights_sha256": manifest.get("weights_sha256"),
            "tensors_replaced": len(manifest.get("tensors") or []),  # type: ignore[arg-type]
            "dtype": str(next(merged.parameters()).dtype).removeprefix("torch.")}


def _write_text_encoder(model_dir: Path, out_dir: Path, rows: TokenRows) -> None:
    """The base text encoder with the version's rows; with phrases, its table grown by one row
    each and the tokenizer reading each phrase as one added token (matched as a whole, after
    the tokenizer's lower-casing), so a plain pipeline encodes prompts as Lethe does."""
    from transformers import AddedToken, CLIPTextModel, CLIPTokenizer

    encoder: Any = CLIPTextModel.from_pretrained(model_dir / TEXT_ENCODER)
    if rows.phrases:
        tokenizer = CLIPTokenizer.from_pretrained(str(model_dir / TOKENIZER))
        for phrase in sorted(rows.phrases, key=lambda p: p.id):
            tokenizer.add_tokens([AddedToken(phrase.text, normalized=True)])
            if tokenizer.convert_tokens_to_ids(phrase.text) != phrase.id:
                raise ValueError(f"phrase {phrase.text!r} would be token "
                                 f"{tokenizer.convert_tokens_to_ids(phrase.text)}, not {phrase.id}")
        tokenizer.save_pretrained(str(out_dir / TOKENIZER))
        encoder.resize_token_embeddings(len(tokenizer))
    table = encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[rows.ids] = rows.values.to(table.dtype)
    encoder.save_pretrained(out_dir / TEXT_ENCODER, safe_serialization=True)
