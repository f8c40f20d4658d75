"""Evidence of erasure: the takedown report (JSON/HTML), the version download (tar) and the
manifest signature used by exports (`app/services/exports.py`: hex HMAC-SHA256 of the manifest
bytes with LETHE_SIGNING_SECRET).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import os
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import AuditEvent, ModelVersion, Preview, Takedown
from app.services import audit
from app.services.artifacts import get_store
from app.services.catalog import erases
from app.services.quarantine import ensure_usable
from app.services.registry import PRODUCTION, alias_target
from app.settings import Settings

UNET_WEIGHTS = (".safetensors", ".bin", ".ckpt", ".pt")


def report(session: Session, td: Takedown, base_url: str) -> dict[str, Any]:
    version = session.get(ModelVersion, td.version_id) if td.version_id else None
    parent = session.get(ModelVersion, version.parent_id) if version and version.parent_id \
        else None
    result = td.result or {}
    rows = session.scalars(select(AuditEvent).where(AuditEvent.target_id.in_(
        [td.id, *([version.id] if version else [])])).order_by(AuditEvent.seq))

    def previews_of(v: ModelVersion | None) -> list[dict[str, Any]]:
        if v is None:
            return []
        return [{"prompt": p.prompt, "seed": p.seed, "images": [
            f"{base_url}/v1/samples/{p.id}/images/{name}" for name in p.images]}
            for p in session.scalars(select(Preview).where(Preview.version_id == v.id))
            if p.images]

    production = alias_target(session, td.model_id, PRODUCTION)
    production_id = production.id if production else None

    def digest(v: ModelVersion | None) -> dict[str, Any] | None:
        return None if v is None else {"id": v.id, "number": v.number, "digest": v.digest,
                                       "erased": v.erased, "purged": v.purged_at is not None,
                                       "production": v.id == production_id}

    still_drawn_by = [
        {"id": v.id, "number": v.number, "production": v.id == production_id,
         "quarantined_at": _iso(v.quarantined_at),
         "purged_at": _iso(v.purged_at), "legal_hold": v.held_at is not None}
        for v in session.scalars(select(ModelVersion).where(ModelVersion.model_id == td.model_id)
                                 .order_by(ModelVersion.number))
        if not erases(v.erased, td.concept)]

    return {
        "takedown": {"id": td.id, "state": td.state, "concept": td.concept, "kind": td.kind,
                     "legal_basis": td.legal_basis, "claimant": td.claimant, "legal": td.legal,
                     "external_ref": td.external_ref, "due_at": td.due_at.isoformat(),
                     "created_at": td.created_at.isoformat(), "decision": td.decision},
        "targets": result.get("targets", {}), "neighbours": result.get("neighbours", {}),
        "covered_by": result.get("covered_by", {}),
        "metrics": result.get("metrics", {}),
        "versions": {"before": digest(parent), "after": digest(version)},
        # Every version of the model the concept is not erased from, and whether any of it
        # can still be served (quarantined: never; purged: its bytes are gone).
        "still_drawn_by": still_drawn_by,
        "limits": ERASURE_LIMITS if version else None,  # nothing was erased without one
        # Images exist only where previews were rendered (POST /v1/versions/{id}/samples).
        "images": {"before": previews_of(parent), "after": previews_of(version)},
        "audit": [audit.as_dict(r) for r in rows],
    }


# What an erasure does not do, for whoever reads the report as proof. Measured on the concept
# world (README, "Fortieth session"; `lethe bench attack`), not on other models.
ERASURE_LIMITS = {
    "prompts": "What was checked: prompts naming the concept by its catalog names, in the "
               "request's wordings and in wordings the erasure never saw. metrics.forget_acc "
               "and forget_acc_heldout give the share of judged images that still show it, and "
               "the evaluation gate lets a version through with at most "
               "LETHE_GATE_MAX_FORGET_ACC of them. A model with no judge was not checked so.",
    "paraphrases": "The erasure acts on the text the model reads. Where it changed only the "
                   "concept's own words (the default on a model with a catalog), a prompt "
                   "that describes the concept without its names is read as before.",
    "weights": "It does not remove the ability to draw the concept from the weights. On the "
               "concept world, an attacker holding a version's weights and pictures of a "
               "concept learned a new word for it (textual inversion, about a minute of CPU) "
               "that drew it about as often as from the model before the erasure, for every "
               "kind of erasure the service runs. Serve the version rather than hand out its "
               "weights where that matters.",
}


def report_html(data: dict[str, Any]) -> str:
    e = html.escape
    td = data["takedown"]

    def grid(items: list[dict[str, Any]]) -> str:
        if not items:
            return "<p><em>no rendered samples for this version</em></p>"
        return "".join(f"<figure><figcaption>{e(i['prompt'])} (seed {i['seed']})</figcaption>"
                       + "".join(f'<img src="{e(u)}" width="128">' for u in i["images"])
                       + "</figure>" for i in items)

    audit_rows = "".join(
        f"<tr><td>{a['seq']}</td><td>{e(a['at'])}</td><td>{e(a['actor'])}</td>"
        f"<td>{e(a['action'])}</td><td><code>{e(a['hash'][:16])}</code></td></tr>"
        for a in data["audit"])
    covered = "".join(f"<p>{e(name)} was erased already by {e(', '.join(by))}: every name of it"
                      " says their words, so nothing was trained for it.</p>"
                      for name, by in data["covered_by"].items())
    covered = f"<h2>Erased already</h2>{covered}" if covered else ""
    limits = "".join(f"<p>{e(v)}</p>" for v in (data["limits"] or {}).values())
    limits = f"<h2>What the erasure does not do</h2>{limits}" if limits else ""
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Lethe evidence report {e(td['id'])}</title></head><body>
<h1>Takedown {e(td['id'])}: {e(td['concept'])}</h1>
<p>State <b>{e(td['state'])}</b>; basis {e(td['legal_basis'])}; due {e(td['due_at'])}</p>
<h2>Legal record</h2><pre>{e(json.dumps(td['legal'], indent=2))}</pre>
<h2>Decision and statement of reasons</h2><pre>{e(json.dumps(td['decision'], indent=2))}</pre>
<h2>Targets</h2><pre>{e(json.dumps(data['targets'], indent=2))}</pre>
{covered}<h2>Metrics</h2><pre>{e(json.dumps(data['metrics'], indent=2))}</pre>
<h2>Versions</h2><pre>{e(json.dumps(data['versions'], indent=2))}</pre>
<h2>Versions that still draw it</h2><pre>{e(json.dumps(data['still_drawn_by'], indent=2))}</pre>
{limits}
<h2>Before</h2>{grid(data['images']['before'])}
<h2>After</h2>{grid(data['images']['after'])}
<h2>Audit</h2><table><tr><th>seq</th><th>at</th><th>actor</th><th>action</th><th>hash</th></tr>
{audit_rows}</table></body></html>"""


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def sign_manifest(settings: Settings, manifest: bytes) -> str:
    return hmac.new(settings.hmac_key, manifest, hashlib.sha256).hexdigest()


def version_tar(session: Session, settings: Settings, version: ModelVersion) -> Path:
    """Write the version's own artifact (changed tensors + manifest) to a temporary tar."""
    ensure_usable(version, "download")
    artifact = get_store(settings).fetch(version.artifact_uri) if version.artifact_uri else None
    settings.staging_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".tar", dir=settings.staging_dir)
    out = Path(name)
    try:
        with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
            if artifact:
                for path in sorted(p for p in artifact.rglob("*") if p.is_file()):
                    tar.add(path, arcname=path.relative_to(artifact).as_posix(),
                            recursive=False)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out
