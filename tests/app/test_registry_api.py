from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient


def test_conceptworld_registered_with_catalog(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    assert [m["name"] for m in models] == ["conceptworld"]
    detail = client.get("/v1/models/conceptworld").json()
    assert {c["name"] for c in detail["concepts"]} >= {"red tulip", "van gogh"}
    assert detail["concepts"][0]["related"] == ["yellow tulip"]
    versions = client.get(f"/v1/models/{detail['id']}/versions").json()
    assert [(v["number"], v["status"], v["parent_id"]) for v in versions] == [(0, "ready", None)]
    assert detail["production_version_id"] == versions[0]["id"]


def test_register_model_under_allowed_root(client: TestClient) -> None:
    r = client.post("/v1/models", json={"name": "house", "path": "house-model",
                                        "concepts": [{"name": "cat"}]})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/models/{r.json()['id']}"
    assert r.json()["concepts"] == [{"name": "cat", "kind": "other", "related": []}]


def test_two_registrations_of_one_name_at_once_get_422_not_503(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loser of the race hit the unique index and was told the database was down."""
    from app.db.models import Model
    from app.db.session import session_scope
    from app.services import registry

    allowed = registry._allowed_folder

    def a_twin_commits_first(*args: Any) -> Any:
        with session_scope() as session:  # after this request checked the name was free
            session.add(Model(name="house", source="path", path="/elsewhere", fence=0))
        return allowed(*args)

    monkeypatch.setattr(registry, "_allowed_folder", a_twin_commits_first)
    r = client.post("/v1/models", json={"name": "house", "path": "house-model"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "name" and "already exists" in r.text


def test_any_unique_key_taken_by_a_concurrent_request_is_a_conflict_not_an_outage() -> None:
    from fastapi import FastAPI
    from sqlalchemy.exc import IntegrityError

    from app.api.problems import install

    app = FastAPI()
    install(app)

    class Unique(Exception):
        sqlstate = "23505"

    @app.post("/raced")
    def raced() -> None:
        raise IntegrityError("INSERT …", {}, Unique("duplicate key value"))

    @app.post("/bug")
    def bug() -> None:
        raise IntegrityError("INSERT …", {}, Exception("null value in column \"name\""))

    client = TestClient(app, raise_server_exceptions=False)
    r = client.post("/raced")
    assert r.status_code == 409 and "Retry-After" not in r.headers, r.text
    assert client.post("/bug").status_code == 500  # not a race: nothing to retry


def test_model_path_outside_allowed_root_is_refused(client: TestClient) -> None:
    for path in ("/etc", "../../etc", "house-model/../../.."):
        r = client.post("/v1/models", json={"name": "evil", "path": path})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["field"] == "path"
        assert "allowed root" in r.json()["detail"]


def test_unknown_model_and_version_are_404(client: TestClient) -> None:
    for url in ("/v1/models/nope", "/v1/models/nope/versions", "/v1/versions/nope"):
        r = client.get(url)
        assert r.status_code == 404
        assert r.json()["status"] == 404


def test_alias_move_and_history(client: TestClient) -> None:
    model = client.get("/v1/models/conceptworld").json()
    base = model["production_version_id"]
    r = client.put(f"/v1/models/{model['id']}/aliases/staging",
                   json={"version_id": base, "reason": "try it"})
    assert r.status_code == 200, r.text
    aliases = client.get(f"/v1/models/{model['id']}/aliases").json()
    assert {a["name"] for a in aliases["aliases"]} == {"production", "staging"}
    assert [h["alias"] for h in aliases["history"]] == ["production", "staging"]
    r = client.put(f"/v1/models/{model['id']}/aliases/production", json={"version_id": "nope"})
    assert r.status_code == 404


def test_an_alias_move_and_a_step_committing_on_its_model_never_deadlock(
        client: TestClient) -> None:
    """A step commits under its model's lock, then moves `production`. An operator's move
    took the alias row first and then waited for the model (its history row's foreign key):
    each held what the other wanted, and Postgres killed one of them."""
    import threading
    import time

    from sqlalchemy import select, update

    from app.db.models import Alias, Model
    from app.db.session import session_scope

    model = client.get("/v1/models/conceptworld").json()
    moved: list[int] = []

    def operator_moves() -> None:
        moved.append(client.put(f"/v1/models/{model['id']}/aliases/production", json={
            "version_id": model["production_version_id"], "reason": "rollback"}).status_code)

    with session_scope() as step:  # as jobs.commit_version: the model, then the alias
        step.execute(select(Model.id).where(Model.id == model["id"]).with_for_update())
        operator = threading.Thread(target=operator_moves)
        operator.start()
        time.sleep(1.0)
        step.execute(update(Alias).where(Alias.model_id == model["id"]).values(
            version_id=Alias.version_id))
    operator.join(timeout=30)
    assert moved == [200]
    history = client.get(f"/v1/models/{model['id']}/aliases").json()["history"]
    assert history[-1]["reason"] == "rollback"  # it came after the step's, and stands


def test_deployers_hear_of_new_versions_alias_moves_quarantine_and_purge(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployer serving a copy of a version that still draws an erased concept had no way
    to learn it must stop (GDPR Art. 19: tell the recipients), nor of an operator's rollback."""
    from app.services import webhooks
    from app.settings import get_settings
    from tests.app.test_compliance import TD, Receiver
    from workers.tasks import run_unlearn_job

    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allowlist", ["127.0.0.1"])
    deployer, everything = Receiver(), Receiver()
    registry_events = ["version.created", "alias.moved", "version.quarantined", "version.purged"]
    assert client.post("/v1/webhooks", json={"url": deployer.url,
                                             "events": registry_events}).status_code == 201
    assert client.post("/v1/webhooks", json={"url": everything.url}).status_code == 201
    bad = client.post("/v1/webhooks", json={"url": deployer.url, "events": ["version.lost"]})
    assert bad.status_code == 422 and "version.created" in bad.text  # the known ones listed
    for concept, kind in (("red tulip", "object"), ("van gogh", "style")):
        td = client.post("/v1/takedowns", json={**TD, "concept": concept, "kind": kind}).json()
        assert run_unlearn_job(td["job_id"], settings) == "completed"
    v0, v1, v2 = client.get("/v1/models/conceptworld/versions").json()
    assert client.post(f"/v1/versions/{v1['id']}/purge", json={}).status_code == 200
    rollback = {"version_id": v0["id"], "reason": "rollback: v2 draws landscapes badly",
                "override_quarantine": True}
    assert client.put(f"/v1/models/{v0['model_id']}/aliases/production",
                      json=rollback).status_code == 200
    webhooks.deliver_due(settings)

    got = [json.loads(body) for _, body in deployer.got]
    assert [(m["type"], m["data"].get("version_id") or m["data"].get("to")) for m in got] == [
        ("version.created", v1["id"]), ("alias.moved", v1["id"]),
        ("version.quarantined", v0["id"]),
        ("version.created", v2["id"]), ("alias.moved", v2["id"]),
        ("version.quarantined", v1["id"]),
        ("version.purged", v1["id"]),
        ("alias.moved", v0["id"])]  # v0 erased nothing: it quarantines no other
    assert got[3]["data"] == {
        "version_id": v2["id"], "model_id": v2["model_id"], "number": 2, "status": "ready",
        "parent_id": v1["id"], "job_id": v2["job_id"], "digest": v2["digest"],
        "erased": v2["erased"], "created_at": got[3]["data"]["created_at"]}
    assert datetime.fromisoformat(got[3]["data"]["created_at"]) == datetime.fromisoformat(
        v2["created_at"].replace("Z", "+00:00"))
    assert got[4]["data"] == {"model_id": v2["model_id"], "alias": "production",
                              "from": v1["id"], "to": v2["id"],
                              "reason": f"job {v2['job_id']} passed the evaluation gate"}
    assert got[7]["data"] == {"model_id": v0["model_id"], "alias": "production",
                              "from": v2["id"], "to": v0["id"], "reason": rollback["reason"]}
    assert got[2]["data"] == {
        "version_id": v0["id"], "model_id": v0["model_id"], "number": 0,
        "contains": ["red tulip"], "production": v1["id"],
        "reason": "still contains erased concepts: ['red tulip']"}
    assert got[6]["data"] | {"reason": ""} == {"version_id": v1["id"], "model_id":
                                               v1["model_id"], "number": 1,
                                               "digest": v1["digest"], "reason": ""}
    # a subscription to every event hears the takedowns', as before registry events existed
    assert {json.loads(body)["type"] for _, body in everything.got} <= {
        f"takedown.{s}" for s in ("received", "queued", "running", "evaluating", "completed",
                                  "decided")}
    audit = client.get("/v1/audit?action=version.created").json()["items"]
    assert [e["target_id"] for e in audit] == [v0["id"], v1["id"], v2["id"]]  # v0: at start
    assert audit[2]["data"] == got[3]["data"]
    assert client.get("/v1/audit/verify").json()["ok"] is True
