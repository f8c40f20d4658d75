from __future__ import annotations

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
