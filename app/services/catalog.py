"""A model's concept catalog, read lazily from `catalog.json` in its folder (may not exist)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.errors import CatalogUnavailable

CATALOG_FILE = "catalog.json"
_cache: dict[Path, tuple[float, list[dict[str, Any]]]] = {}


def read_catalog(model_dir: Path) -> list[dict[str, Any]]:
    """Entries {name, kind, related, prompts}; cached until the file's mtime changes.

    The file is either that list or {"concepts": [...], ...} (the engine's fuller form, which
    also carries generic words and slot semantics; see workers/engine/concepts.py).
    """
    path = Path(model_dir) / CATALOG_FILE
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        raise CatalogUnavailable(
            f"no concept catalog at {path}: the model folder is missing or not built yet"
        ) from None
    cached = _cache.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogUnavailable(f"concept catalog at {path} is unreadable: {exc}") from None
    if isinstance(entries, dict):
        entries = entries.get("concepts")
    if not isinstance(entries, list):
        raise CatalogUnavailable(f"concept catalog at {path} must be a JSON list of concepts")
    _cache[path] = (mtime, entries)
    return entries


def concept_names(entries: list[dict[str, Any]]) -> set[str]:
    return {normalise_concept(str(e.get("name", ""))) for e in entries}


def normalise_concept(name: str) -> str:
    return " ".join(name.strip().lower().split())


def spelling(entries: list[dict[str, Any]]) -> Callable[[str], str]:
    """A name as the catalog spells it, where the catalog knows it (compared as
    `normalise_concept` compares); otherwise the name without its outer spaces."""
    spelt = {normalise_concept(str(e.get("name", ""))): str(e["name"]) for e in entries
             if "name" in e}
    return lambda name: spelt.get(normalise_concept(name), name.strip())


def erases(erased: list[str], concept: str) -> bool:
    """Whether a version that erased `erased` erased `concept` (names compared as the
    catalog compares them)."""
    return normalise_concept(concept) in {normalise_concept(c) for c in erased}
