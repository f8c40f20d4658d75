"""Issue 5 acceptance: auth matrix, audit tamper, idempotency, webhooks + SSRF, quarantine/purge."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from app.db.models import Takedown, WebhookDelivery, WebhookSubscription
from app.db.session import get_engine, session_scope
from app.services import decisions, webhooks
from app.settings import get_settings
from tests.conftest import create_key, create_key_all
from workers.tasks import run_unlearn_job

CLAIMANT = {"name": "A. Rights", "email": "legal@example.com"}
TD = {"model": "conceptworld", "concept": "red tulip", "kind": "object",
      "legal_basis": "copyright", "claimant": CLAIMANT}
OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
        "/redoc"}


def scope_of(route: APIRoute) -> str | None:
    for dep in route.dependant.dependencies:
        name = getattr(dep.call, "__name__", "")
        if name.startswith("require_"):
            return name.removeprefix("require_").replace("_", ":", 1)
    return None


def v1_routes() -> list[tuple[str, APIRoute]]:
    from app.api.routes import (
        audit,
        integrations,
        jobs,
        keys,
        models,
        reports,
        takedowns,
        versions,
    )

    return [("/v1" + r.path, r)
            for m in (models, versions, takedowns, jobs, audit, keys, integrations, reports)
            for r in m.router.routes if isinstance(r, APIRoute)]


def test_auth_matrix_every_route(client: TestClient) -> None:
    matrix = {(path, method) for path, r in v1_routes() for method in r.methods or ()}
    documented = {(path, method.upper()) for path, ops in client.get("/openapi.json").json()[
        "paths"].items() for method in ops}
    assert documented - matrix <= {(p, "GET") for p in OPEN}, documented - matrix
    assert all(scope_of(r) for _, r in v1_routes()), "a /v1 route without a scope"
    keys = {s: create_key([s], s) for s in ("takedowns:write", "takedowns:read",
                                             "models:admin", "audit:read")}
    revoked = create_key(["takedowns:write", "takedowns:read", "models:admin", "audit:read"])
    rid = client.get("/v1/keys").json()
    revoked_id = next(k["id"] for k in rid if k["prefix"] == revoked[:12])
    assert client.post(f"/v1/keys/{revoked_id}/revoke").status_code == 200
    checked = 0
    for path, route in v1_routes():
        scope = scope_of(route)
        assert scope is not None
        url = re.sub(r"\{[^}]+\}", "x", path)
        for method in route.methods or ():
            def call(key: str | None, method: str = method, url: str = url) -> Any:
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                client.headers.pop("Authorization", None)
                return client.request(method, url, headers=headers, json={})
            admin = client.headers.get("Authorization")
            try:
                none = call(None)
                assert none.status_code == 401, (method, url, none.text)
                assert none.headers["content-type"] == "application/problem+json"
                assert none.headers["www-authenticate"].startswith("Bearer")
                wrong = next(k for s, k in keys.items() if s != scope)
                assert call(wrong).status_code == 403, (method, url)
                assert call(revoked).status_code == 401, (method, url)
                assert call(keys[scope]).status_code not in (401, 403), (method, url)
            finally:
                if admin:
                    client.headers["Authorization"] = admin
            checked += 1
    assert checked >= 25


def test_audit_chain_and_tamper_is_named(client: TestClient) -> None:
    td = client.post("/v1/takedowns", json=TD).json()
    client.post(f"/v1/takedowns/{td['id']}/cancel")
    page = client.get(f"/v1/audit?target_id={td['id']}").json()["items"]
    assert [e["action"] for e in page] == ["takedown.received", "takedown.queued",
                                           "takedown.cancelled"]
    assert all(e["actor"].startswith("key:") for e in page)
    assert client.get("/v1/audit/verify").json()["ok"] is True
    with get_engine().begin() as conn:  # the trigger refuses edits
        with pytest.raises(Exception, match="append-only"):
            conn.execute(text("UPDATE audit_events SET actor = 'x' WHERE seq = 1"))
    with get_engine().begin() as conn:
        with pytest.raises(Exception, match="append-only"):
            conn.execute(text("DELETE FROM audit_events WHERE seq = 1"))
    bad = page[1]["seq"]
    with get_engine().begin() as conn:  # a superuser disables the trigger and edits a row
        conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE audit_events SET data = '{\"to\": \"completed\"}' "
                          "WHERE seq = :s"), {"s": bad})
        conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
    result = client.get("/v1/audit/verify").json()
    assert result["ok"] is False and result["first_bad_seq"] == bad, result


def test_idempotency_20_concurrent_posts_one_takedown(client: TestClient) -> None:
    headers = {"Idempotency-Key": "ticket-42"}
    body = {**TD, "external_ref": "T-42"}
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/takedowns", json=body,
                                                        headers=headers), range(20)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {202, 409}, codes
    with session_scope() as session:
        assert len(session.scalars(select(Takedown)).all()) == 1
    first = next(r for r in responses if r.status_code == 202).json()
    again = client.post("/v1/takedowns", json=body, headers=headers)
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = client.post("/v1/takedowns", json={**body, "concept": "van gogh"}, headers=headers)
    assert other.status_code == 422


def test_an_idempotency_key_left_in_flight_or_past_its_expiry_is_taken_anew(
        client: TestClient) -> None:
    """A process that died mid-request left its key `in_flight`: every retry got 409 forever.
    A key older than its expiry (24 h) is a new request, and the reconciler prunes it."""
    from datetime import timedelta

    from app.db.models import IdempotencyRecord
    from app.db.types import utcnow
    from app.services.reconciler import reconcile_once

    settings = get_settings()
    auth = client.headers.get("authorization", "").encode()
    principal = hashlib.sha256(auth).hexdigest()
    body = json.dumps(TD).encode()
    fingerprint = hashlib.sha256(b"POST /v1/takedowns\n" + body).hexdigest()

    def post(key: str) -> Any:
        return client.post("/v1/takedowns", content=body, headers={
            "Idempotency-Key": key, "Content-Type": "application/json"})

    died = utcnow() - timedelta(seconds=settings.idempotency_in_flight_seconds + 1)
    expired = utcnow() - timedelta(seconds=settings.idempotency_ttl_seconds + 1)
    with session_scope() as session:
        session.add(IdempotencyRecord(principal=principal, key="died", fingerprint=fingerprint,
                                      state="in_flight", created_at=died))
        session.add(IdempotencyRecord(principal=principal, key="fresh", fingerprint=fingerprint,
                                      state="in_flight", created_at=utcnow()))
        session.add(IdempotencyRecord(principal=principal, key="old", fingerprint="x",
                                      state="done", status_code=202, headers={}, body="{}",
                                      created_at=expired))
        session.add(IdempotencyRecord(principal=principal, key="pruned", fingerprint="x",
                                      state="done", status_code=202, headers={}, body="{}",
                                      created_at=expired))
    assert post("fresh").status_code == 409
    for key in ("died", "old"):
        r = post(key)
        assert r.status_code == 202, r.text
        again = post(key)
        assert again.json()["id"] == r.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
    reconcile_once(settings)
    with session_scope() as session:
        keys = {row.key for row in session.scalars(select(IdempotencyRecord))}
    assert keys == {"died", "old", "fresh"}


def test_a_secret_shown_once_is_replayed_to_its_caller_but_never_stored_readable(
        client: TestClient) -> None:
    """A retried POST /v1/keys must get the same key back, yet the stored replay held every
    new key and webhook secret in plain text for a day (the docs: "only sha256 is stored")."""
    from app.db.models import IdempotencyRecord

    made = {"keys": ("/v1/keys", {"name": "ticketing", "scopes": ["takedowns:read"]}),
            "webhook": ("/v1/webhooks", {"url": "https://hooks.example/x",
                                         "events": ["takedown.completed"]})}
    secrets = {}
    for name, (path, body) in made.items():
        first = client.post(path, json=body, headers={"Idempotency-Key": name})
        assert first.status_code == 201, first.text
        assert first.headers["cache-control"] == "no-store"
        again = client.post(path, json=body, headers={"Idempotency-Key": name})
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json() and again.headers["cache-control"] == "no-store"
        secrets[name] = first.json()["secret"]
    hook = client.post(f"/v1/webhooks/{client.get('/v1/webhooks').json()[0]['id']}"
                       "/rotate-secret", headers={"Idempotency-Key": "rotate"})
    assert hook.status_code == 200 and hook.headers["cache-control"] == "no-store"
    secrets["rotate"] = hook.json()["secret"]
    with session_scope() as session:
        stored = {row.key: row for row in session.scalars(select(IdempotencyRecord))}
    assert set(stored) == {"keys", "webhook", "rotate"}
    for key, secret in secrets.items():
        kept = stored[key].body or ""
        assert stored[key].status_code in (200, 201) and stored[key].sealed and kept
        assert secret not in kept and secret[4:] not in kept
    other_caller = client.post("/v1/keys", json=made["keys"][1], headers={
        "Idempotency-Key": "keys", "Authorization": f"Bearer {create_key_all()}"})
    assert other_caller.status_code == 201  # keys are per caller: a new key, not a replay
    assert other_caller.json()["secret"] != secrets["keys"]


def test_integration_ref_is_unique_and_jira_adapter(client: TestClient) -> None:
    issue = {"webhookEvent": "jira:issue_created", "issue": {"key": "LEGAL-7", "fields": {
        "summary": "red tulip", "lethe_kind": "object", "lethe_legal_basis": "copyright",
        "reporter": {"displayName": "R", "emailAddress": "r@example.com"}}}}
    first = client.post("/v1/integrations/jira/webhook", json=issue)
    assert first.status_code == 202, first.text
    retry = client.post("/v1/integrations/jira/webhook", json=issue)
    assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    assert retry.json()["external_ref"] == "LEGAL-7" and retry.json()["integration"] == "jira"
    assert client.post("/v1/integrations/nope/webhook", json=issue).status_code == 404
    bad = client.post("/v1/integrations/jira/webhook", json={"webhookEvent": "x"})
    assert bad.status_code == 422
    for malformed in ({"webhookEvent": ["a"]}, {**issue, "issue": "LEGAL-8"},
                      {**issue, "issue": {"key": "LEGAL-9", "fields": ["x"]}},
                      {**issue, "issue": {"key": "LEGAL-9", "fields": {"reporter": "R"}}}):
        r = client.post("/v1/integrations/jira/webhook", json=malformed)
        assert r.status_code == 422, (malformed, r.status_code)  # was a 500


def test_a_jira_ticket_carries_the_legal_record_and_never_invents_a_claimant(
        client: TestClient) -> None:
    """A DMCA notice needs its legal elements, which a Jira ticket had no way to give (every
    DMCA or DSA ticket was refused); a reporter whose email Jira hides was filed as
    unknown@invalid.example, a claimant nobody can answer."""
    legal = {"work_identification": "Tulip photo series", "good_faith_statement": True,
             "accuracy_statement": True, "authority_under_perjury": True,
             "signature": {"name": "A. Rights", "signed_at": "2026-01-01T00:00:00Z"}}
    fields = {"summary": "red tulip", "lethe_kind": "object", "lethe_legal_basis": "dmca",
              "lethe_prompts": ["a red tulip"], "lethe_legal": legal,
              "lethe_claimant_email": "legal@tulip.example",
              "lethe_claimant_organisation": "Tulip Co",
              "lethe_due_at": "2030-01-01T00:00:00Z", "reporter": {"displayName": "R"}}
    issue = {"webhookEvent": "jira:issue_created", "issue": {"key": "LEGAL-8", "fields": fields}}
    r = client.post("/v1/integrations/jira/webhook", json=issue)
    assert r.status_code == 202, r.text
    td = r.json()
    assert td["legal"]["work_identification"] == "Tulip photo series"
    assert td["claimant"] == {"name": "R", "email": "legal@tulip.example",
                              "organisation": "Tulip Co"}
    assert td["due_at"].startswith("2030-01-01")
    hidden = {**fields, "lethe_claimant_email": None, "lethe_legal_basis": "copyright"}
    r = client.post("/v1/integrations/jira/webhook", json={
        "webhookEvent": "jira:issue_created", "issue": {"key": "LEGAL-9", "fields": hidden}})
    assert r.status_code == 422, r.text
    assert "lethe_claimant_email" in r.json()["detail"]


def test_legal_elements_and_gdpr_extension(client: TestClient) -> None:
    r = client.post("/v1/takedowns", json={**TD, "legal_basis": "dmca"})
    assert r.status_code == 422 and "signature" in r.json()["detail"]
    legal = {"work_identification": "Tulip photo series", "good_faith_statement": True,
             "accuracy_statement": True, "authority_under_perjury": True,
             "signature": {"name": "A. Rights", "signed_at": "2026-01-01T00:00:00Z"}}
    ok = client.post("/v1/takedowns", json={**TD, "legal_basis": "dmca", "legal": legal,
                                            "prompts": ["a red tulip"]})
    assert ok.status_code == 202, ok.text
    gdpr = client.post("/v1/takedowns", json={**TD, "legal_basis": "gdpr_art17"}).json()
    ext = client.post(f"/v1/takedowns/{gdpr['id']}/extend",
                      json={"months": 2, "reason": "many linked requests"})
    assert ext.status_code == 200 and ext.json()["legal"]["extension"]["reason"]
    assert client.post(f"/v1/takedowns/{gdpr['id']}/extend",
                       json={"months": 1, "reason": "again"}).status_code == 409
    late = client.post("/v1/takedowns", json={**TD, "legal_basis": "gdpr_art17",
                                              "due_at": "2020-01-01T00:00:00Z"}).json()
    assert "lethe_takedowns_overdue 1.0" in client.get("/metrics").text
    # Art. 12(3): the extension is notified within the first month, so never once it passed.
    too_late = client.post(f"/v1/takedowns/{late['id']}/extend",
                           json={"months": 2, "reason": "many linked requests"})
    assert too_late.status_code == 409 and "2020-01-01" in too_late.json()["detail"]


def test_an_ended_takedown_states_its_reasons_and_a_reviewer_can_decide_again(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """DSA Art. 17(3): the decision, its facts, automation used, legal ground and redress."""
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allowlist", ["127.0.0.1"])
    receiver = Receiver()
    client.post("/v1/webhooks", json={"url": receiver.url, "events": ["takedown.decided"]})
    td = client.post("/v1/takedowns", json=TD).json()
    assert td["decision"] is None
    url = f"/v1/takedowns/{td['id']}/decision"
    review = {"outcome": "partial", "statement_of_reasons": "The photos' style stays: not a work."}
    early = client.post(url, json=review)
    assert early.status_code == 409 and "ended" in early.json()["detail"]
    assert run_unlearn_job(td["job_id"], settings) == "completed"
    decision = client.get(f"/v1/takedowns/{td['id']}").json()["decision"]
    assert decision | {"statement_of_reasons": "", "decided_at": "", "redress": ""} == {
        "outcome": "accepted", "automated": True, "decided_by": "system",
        "legal_basis": "copyright", "statement_of_reasons": "", "decided_at": "", "redress": ""}
    assert "'red tulip'" in decision["statement_of_reasons"]
    assert "version 1" in decision["statement_of_reasons"]
    assert decision["redress"] == decisions.REDRESS["default"]
    unknown = client.post("/v1/takedowns", json={**TD, "concept": "purple unicorn"}).json()
    assert unknown["decision"]["outcome"] == "rejected"
    assert "does not know 'purple unicorn'" in unknown["decision"]["statement_of_reasons"]

    for bad in ({**review, "outcome": "maybe"}, {"outcome": "partial"},
                {**review, "statement_of_reasons": ""}, {**review, "automated": True}):
        assert client.post(url, json=bad).status_code == 422, bad
    assert client.post("/v1/takedowns/nope/decision", json=review).status_code == 404
    nothing_erased = f"/v1/takedowns/{unknown['id']}/decision"
    assert client.post(nothing_erased, json=review).status_code == 409
    assert client.post(nothing_erased, json={**review, "outcome": "rejected"}).status_code == 200
    monkeypatch.setattr(settings, "redress_info", {"copyright": "Write to appeals@example.com"})
    reviewed = client.post(url, json=review)
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json()["decision"] | {"decided_at": ""} == {
        **review, "automated": False, "decided_by": reviewed.json()["decision"]["decided_by"],
        "legal_basis": "copyright", "redress": "Write to appeals@example.com", "decided_at": ""}
    assert reviewed.json()["decision"]["decided_by"].startswith("key:")
    assert reviewed.json()["state"] == "completed"  # a decision is a record, not a state

    audit = client.get(f"/v1/audit?target_id={td['id']}&action=takedown.decided").json()
    assert [e["data"]["outcome"] for e in audit["items"]] == ["accepted", "partial"]
    replaced = audit["items"][0]["data"]  # whole, though the takedown no longer shows it
    assert replaced | {"decided_at": ""} == decision | {"decided_at": ""}
    report = client.get(f"/v1/takedowns/{td['id']}/report").json()
    assert report["takedown"]["decision"]["outcome"] == "partial"
    assert client.get(f"/v1/takedowns/{unknown['id']}/report").json()["limits"] is None
    webhooks.deliver_due(settings)
    told = sorted((json.loads(body)["data"]["id"], json.loads(body)["data"]["decision"]["outcome"])
                  for _, body in receiver.got)
    assert told == sorted([(td["id"], "accepted"), (td["id"], "partial"),
                           (unknown["id"], "rejected"), (unknown["id"], "rejected")])


def test_a_claimant_can_rescind_a_notice_and_the_record_says_what_it_changed(
        client: TestClient) -> None:
    """A withdrawn notice was indistinguishable from a cancelled one, and one withdrawn after
    its erasure could not be recorded at all."""
    queued = client.post("/v1/takedowns", json=TD).json()
    url = f"/v1/takedowns/{queued['id']}/rescind"
    assert client.post(url, json={"reason": ""}).status_code == 422
    assert client.post(url, json={}).status_code == 422
    assert client.post("/v1/takedowns/nope/rescind", json={"reason": "x"}).status_code == 404
    withdrawn = client.post(url, json={"reason": "settled with the artist"})
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["state"] == "cancelled"
    record = withdrawn.json()["legal"]["rescinded"]
    assert record["reason"] == "settled with the artist" and record["by"].startswith("key:")
    assert record["state_then"] == "queued"
    again = client.post(url, json={"reason": "twice"})
    assert again.status_code == 409 and "settled" in again.json()["detail"]

    done = client.post("/v1/takedowns", json={**TD, "concept": "van gogh",
                                              "kind": "style"}).json()
    assert run_unlearn_job(done["job_id"], get_settings()) == "completed"
    late = client.post(f"/v1/takedowns/{done['id']}/rescind", json={"reason": "withdrawn"})
    assert late.status_code == 200, late.text
    assert late.json()["state"] == "completed"  # the erasure stands until production moves
    assert late.json()["legal"]["rescinded"]["state_then"] == "completed"
    production = client.get("/v1/models/conceptworld").json()["production_version_id"]
    assert "van gogh" in client.get(f"/v1/versions/{production}").json()["erased"]
    audit = client.get(f"/v1/audit?target_id={done['id']}&action=takedown.rescinded").json()
    assert [e["data"]["reason"] for e in audit["items"]] == ["withdrawn"]


# --- webhooks -----------------------------------------------------------------------------

def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Independent of app.services.webhooks: the Standard Webhooks verification recipe."""
    key = base64.b64decode(secret.split("_", 1)[1]) if secret.startswith("whsec_") \
        else secret.encode()
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(sig.split(",", 1)[1], expected)
               for sig in headers["webhook-signature"].split())


class Receiver:
    def __init__(self, fail_first: int = 0, delay: float = 0.0) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(delay)
                self.send_response(500 if len(outer.got) <= outer.fail_first else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def subscribe_to_cancels(client: TestClient, receiver: Receiver) -> dict[str, Any]:
    """A subscription of `receiver` to `takedown.cancelled`, with its secret."""
    r = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["takedown.cancelled"]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_signed_webhook_with_retries_and_redeliver(client: TestClient,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allowlist", ["127.0.0.1"])
    monkeypatch.setattr(settings, "webhook_backoff_seconds", 0.0)
    monkeypatch.setattr(settings, "webhook_max_attempts", 3)
    receiver = Receiver(fail_first=2)
    sub = subscribe_to_cancels(client, receiver)
    td = client.post("/v1/takedowns", json=TD).json()
    client.post(f"/v1/takedowns/{td['id']}/cancel")
    for _ in range(3):
        webhooks.deliver_due(settings)
    assert len(receiver.got) == 3
    for headers, body in receiver.got:
        assert verify_standard_webhook(sub["secret"], headers, body)
        assert not verify_standard_webhook("whsec_" + base64.b64encode(b"x" * 32).decode(),
                                           headers, body)
    assert len({h["webhook-id"] for h, _ in receiver.got}) == 1  # stable across retries
    assert json.loads(receiver.got[0][1])["data"]["state"] == "cancelled"
    log = client.get(f"/v1/webhooks/deliveries?takedown_id={td['id']}").json()
    assert [a["status"] for a in log[0]["attempts"]] == [500, 500, 204]
    assert log[0]["state"] == "delivered"
    again = client.post(f"/v1/webhooks/deliveries/{log[0]['id']}/redeliver")
    assert again.json()["state"] == "pending"
    webhooks.deliver_due(settings)
    assert len(receiver.got) == 4


def test_a_send_that_fails_in_an_unforeseen_way_is_an_attempt_not_a_loop(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx refuses a URL too long once encoded (InvalidURL, not an HTTPError): the sender
    stopped with nothing recorded, and the row came back every lease, never `failed`."""
    import httpx

    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_max_attempts", 2)
    monkeypatch.setattr(settings, "webhook_backoff_seconds", 0.0)
    client.post("/v1/webhooks", json={"url": "https://hooks.example/x",
                                      "events": ["takedown.cancelled"]})
    td = client.post("/v1/takedowns", json=TD).json()
    client.post(f"/v1/takedowns/{td['id']}/cancel")

    def refuse(*_: Any, **__: Any) -> Any:
        raise httpx.InvalidURL("URL too long")

    monkeypatch.setattr(webhooks, "check_url", lambda *_, **__: None)
    monkeypatch.setattr(httpx.Client, "stream", refuse)
    for _ in range(2):
        webhooks.deliver_due(settings)
    (log,) = client.get(f"/v1/webhooks/deliveries?takedown_id={td['id']}").json()
    assert log["state"] == "failed"
    assert [a["error"] for a in log["attempts"]] == ["InvalidURL: URL too long"] * 2


def test_a_slow_receiver_locks_no_other_delivery(client: TestClient,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Deliveries were sent inside one transaction holding every due row (on SQLite, the
    whole database): a slow receiver blocked every other write for the batch's duration."""
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allowlist", ["127.0.0.1"])
    receiver = Receiver(delay=3.0)
    subscribe_to_cancels(client, receiver)
    for concept in ("red tulip", "van gogh"):
        td = client.post("/v1/takedowns", json={**TD, "concept": concept}).json()
        client.post(f"/v1/takedowns/{td['id']}/cancel")
    sender = threading.Thread(target=webhooks.deliver_due, args=(settings,))
    sender.start()
    deadline = time.monotonic() + 10
    while not receiver.got and time.monotonic() < deadline:
        time.sleep(0.05)
    first = receiver.got[0][0]["webhook-id"]
    clock = time.monotonic()
    with session_scope() as session:
        other = session.scalars(select(WebhookDelivery).where(WebhookDelivery.id != first)
                                .with_for_update()).one()
        other.url = receiver.url + "?moved"
    waited = time.monotonic() - clock
    sender.join()
    assert waited < 1.0, f"a write to another delivery waited {waited:.1f} s"
    assert len(receiver.got) == 2


def test_a_notice_is_acknowledged_on_receipt_to_its_callback_and_subscribers(
        client: TestClient) -> None:
    """`takedown.received` could be subscribed to and never fired: a notifier heard nothing
    until the step was queued, and a rejected notice said nothing of its receipt."""
    client.post("/v1/webhooks", json={"url": "https://hooks.example/r",
                                      "events": ["takedown.received"]})
    td = client.post("/v1/takedowns", json={
        **TD, "callback_url": "https://claimant.example/cb"}).json()
    log = client.get(f"/v1/webhooks/deliveries?takedown_id={td['id']}").json()
    received = sorted(d["url"] for d in log if d["event"] == "takedown.received")
    assert received == ["https://claimant.example/cb", "https://hooks.example/r"], log
    with session_scope() as session:
        payload = session.scalars(select(WebhookDelivery.payload).where(
            WebhookDelivery.event == "takedown.received",
            WebhookDelivery.url == "https://hooks.example/r")).one()
    assert payload["data"]["id"] == td["id"] and payload["data"]["state"] == "received"


def test_the_delivery_log_filters_by_state_and_pages_past_its_limit(client: TestClient) -> None:
    """The log showed the newest 200 only: an older failed delivery could not be found to be
    sent again."""
    from datetime import timedelta

    from app.db.types import utcnow

    start = utcnow()
    with session_scope() as session:
        for i in range(5):
            session.add(WebhookDelivery(
                id=f"d{i}", url="https://hooks.example/x", event="takedown.failed", payload={},
                state="failed" if i % 2 == 0 else "delivered", attempts=[],
                created_at=start + timedelta(seconds=i)))
    failed = client.get("/v1/webhooks/deliveries?state=failed").json()
    assert [d["id"] for d in failed] == ["d4", "d2", "d0"]
    page = client.get("/v1/webhooks/deliveries?limit=2").json()
    assert [d["id"] for d in page] == ["d4", "d3"]
    rest = client.get("/v1/webhooks/deliveries?limit=2&before=d3").json()
    assert [d["id"] for d in rest] == ["d2", "d1"]
    assert client.get("/v1/webhooks/deliveries?state=lost").status_code == 422
    assert client.get("/v1/webhooks/deliveries?before=nope").status_code == 404


def test_a_subscription_to_an_event_that_never_fires_is_refused(client: TestClient) -> None:
    r = client.post("/v1/webhooks", json={"url": "https://hooks.example/x",
                                          "events": ["takedown.completed", "takedown.done"]})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "events"
    assert "takedown.done" in r.json()["errors"][0]["message"]
    ok = client.post("/v1/webhooks", json={"url": "https://hooks.example/x",
                                           "events": ["takedown.completed", "takedown.failed"]})
    assert ok.status_code == 201, ok.text


def test_subscriptions_are_listed_changed_and_deleted_never_showing_their_secret(
        client: TestClient) -> None:
    first = client.post("/v1/webhooks", json={"url": "https://hooks.example/a"}).json()
    second = client.post("/v1/webhooks", json={"url": "https://hooks.example/b",
                                               "events": ["takedown.failed"]}).json()
    listed = client.get("/v1/webhooks").json()
    assert [s["id"] for s in listed] == [second["id"], first["id"]]  # newest first
    assert all("secret" not in s for s in listed)
    one = client.get(f"/v1/webhooks/{first['id']}").json()
    assert one["url"] == "https://hooks.example/a" and "secret" not in one
    assert client.get("/v1/webhooks/nope").status_code == 404

    url = f"/v1/webhooks/{first['id']}"
    assert client.patch(url, json={}).status_code == 422
    assert client.patch(url, json={"events": ["takedown.done"]}).status_code == 422
    assert client.patch(url, json={"url": "http://169.254.169.254/x"}).status_code == 422
    assert client.patch(url, json={"secret": "whsec_x"}).status_code == 422
    changed = client.patch(url, json={"url": "https://hooks.example/a2", "active": False,
                                      "events": ["takedown.completed"]})
    assert changed.status_code == 200, changed.text
    assert changed.json() | {"created_at": None} == {
        "id": first["id"], "url": "https://hooks.example/a2", "active": False,
        "events": ["takedown.completed"], "created_at": None,
        "previous_secret_expires_at": None}

    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404
    assert client.delete(url).status_code == 404
    assert client.patch(url, json={"active": True}).status_code == 404
    assert [s["id"] for s in client.get("/v1/webhooks").json()] == [second["id"]]
    audit = client.get(f"/v1/audit?target_id={first['id']}").json()["items"]
    assert [e["action"] for e in audit] == ["webhook.subscribed", "webhook.changed",
                                            "webhook.deleted"]
    assert audit[1]["data"] == {
        "before": {"url": "https://hooks.example/a", "active": True, "events": []},
        "after": {"url": "https://hooks.example/a2", "active": False,
                  "events": ["takedown.completed"]}}


def test_an_inactive_subscription_holds_its_queue_and_a_moved_one_sends_to_its_new_url(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allowlist", ["127.0.0.1"])
    old, new = Receiver(), Receiver()
    sub = subscribe_to_cancels(client, old)
    td = client.post("/v1/takedowns", json=TD).json()
    client.post(f"/v1/takedowns/{td['id']}/cancel")  # queued while active
    client.patch(f"/v1/webhooks/{sub['id']}", json={"active": False, "url": new.url})
    other = client.post("/v1/takedowns", json={**TD, "concept": "van gogh"}).json()
    client.post(f"/v1/takedowns/{other['id']}/cancel")  # not queued: inactive
    webhooks.deliver_due(settings)
    assert old.got == [] and new.got == []
    client.patch(f"/v1/webhooks/{sub['id']}", json={"active": True})
    webhooks.deliver_due(settings)
    assert [json.loads(body)["data"]["id"] for _, body in new.got] == [td["id"]]
    assert old.got == []
    log = client.get(f"/v1/webhooks/deliveries?takedown_id={td['id']}").json()
    assert log[0]["url"] == new.url and log[0]["state"] == "delivered"


def test_a_deleted_subscription_sends_nothing_more_and_cannot_be_redelivered(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allowlist", ["127.0.0.1"])
    receiver = Receiver()
    sub = subscribe_to_cancels(client, receiver)
    td = client.post("/v1/takedowns", json=TD).json()
    client.post(f"/v1/takedowns/{td['id']}/cancel")
    assert client.delete(f"/v1/webhooks/{sub['id']}").status_code == 204
    webhooks.deliver_due(settings)
    assert receiver.got == []
    log = client.get(f"/v1/webhooks/deliveries?takedown_id={td['id']}").json()
    assert log[0]["state"] == "failed"
    assert "deleted" in log[0]["attempts"][-1]["error"]
    again = client.post(f"/v1/webhooks/deliveries/{log[0]['id']}/redeliver")
    assert again.status_code == 409, again.text


def test_a_change_racing_a_delete_cannot_bring_the_subscription_back(
        client: TestClient) -> None:
    """A PATCH that read the row before a concurrent DELETE committed wrote `active` back:
    deleted (404 to every route) yet still sent every event."""
    from app.db.models import WebhookSubscription
    from app.db.session import get_sessionmaker

    sub = client.post("/v1/webhooks", json={"url": "https://hooks.example/a"}).json()
    patch = get_sessionmaker()()
    held = webhooks.get_subscription(patch, sub["id"], for_change=True)

    def delete() -> None:
        with session_scope() as session:
            webhooks.delete_subscription(session, sub["id"])

    deleter = threading.Thread(target=delete)
    deleter.start()
    time.sleep(0.5)
    assert deleter.is_alive(), "the delete did not wait for the change under way"
    held.active = True
    patch.commit()
    patch.close()
    deleter.join(timeout=10)
    with session_scope() as session:
        row = session.get(WebhookSubscription, sub["id"])
        assert row is not None and row.deleted_at is not None and row.active is False


def test_a_delivery_sent_while_its_subscription_was_deleted_keeps_what_the_receiver_said(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.db.types import utcnow

    sub = client.post("/v1/webhooks", json={"url": "https://hooks.example/a"}).json()
    with session_scope() as session:
        session.add(WebhookDelivery(id="sent", subscription_id=sub["id"], url=sub["url"],
                                    event="takedown.failed", payload={}, state="pending",
                                    attempts=[], next_attempt_at=utcnow()))

    def post_while_deleted(*_: Any) -> dict[str, Any]:
        assert client.delete(f"/v1/webhooks/{sub['id']}").status_code == 204
        return {"at": utcnow().isoformat(), "status": 200, "error": None}

    monkeypatch.setattr(webhooks, "_post", post_while_deleted)
    webhooks.deliver_due(get_settings())
    with session_scope() as session:
        row = session.get(WebhookDelivery, "sent")
        assert row is not None and row.state == "delivered"
        assert [a["status"] for a in row.attempts] == [None, 200]


def test_a_rotated_secret_signs_beside_the_old_one_until_its_grace_ends(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allowlist", ["127.0.0.1"])
    receiver = Receiver()
    sub = subscribe_to_cancels(client, receiver)
    rotate = f"/v1/webhooks/{sub['id']}/rotate-secret"
    assert client.post(rotate, json={"keep_previous_seconds": -1}).status_code == 422
    assert client.post(rotate, json={"keep_previous_seconds": 8 * 86400}).status_code == 422
    assert client.post("/v1/webhooks/nope/rotate-secret").status_code == 404
    rotated = client.post(rotate)  # no body: the old secret signs too for 24 h
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["secret"]
    assert second.startswith("whsec_") and second != sub["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None

    def send_one(concept: str) -> tuple[dict[str, str], bytes]:
        td = client.post("/v1/takedowns", json={**TD, "concept": concept}).json()
        client.post(f"/v1/takedowns/{td['id']}/cancel")
        webhooks.deliver_due(settings)
        return receiver.got[-1]

    headers, body = send_one("red tulip")
    assert len(headers["webhook-signature"].split()) == 2
    assert verify_standard_webhook(second, headers, body)
    assert verify_standard_webhook(sub["secret"], headers, body)

    third = client.post(rotate, json={"keep_previous_seconds": 0}).json()
    assert third["previous_secret_expires_at"] is None
    headers, body = send_one("van gogh")
    assert len(headers["webhook-signature"].split()) == 1
    assert verify_standard_webhook(third["secret"], headers, body)
    assert not verify_standard_webhook(second, headers, body)
    audit = client.get(f"/v1/audit?target_id={sub['id']}").json()["items"]
    assert [e["action"] for e in audit].count("webhook.secret_rotated") == 2
    assert all("whsec_" not in json.dumps(e["data"]) for e in audit)


def test_a_previous_secret_is_forgotten_once_its_grace_ends(client: TestClient) -> None:
    """A secret that no longer signs is no longer kept: a database leak cannot forge with it."""
    from app.services.reconciler import reconcile_once

    def stored(sub_id: str) -> tuple[str | None, Any]:
        with session_scope() as session:
            row = session.get(WebhookSubscription, sub_id)
            assert row is not None
            return row.previous_secret, row.previous_secret_expires_at

    ending, lasting = (client.post("/v1/webhooks", json={"url": "https://hooks.example.com/"
                                                         + name}).json()
                       for name in ("a", "b"))
    for sub, keep in ((ending, 60), (lasting, 3600)):
        client.post(f"/v1/webhooks/{sub['id']}/rotate-secret",
                    json={"keep_previous_seconds": keep})
    assert reconcile_once(get_settings()).previous_secrets_forgotten == 0
    assert stored(ending["id"])[0] == ending["secret"]
    with session_scope() as session:
        session.execute(update(WebhookSubscription).where(
            WebhookSubscription.id == ending["id"]).values(
            previous_secret_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert reconcile_once(get_settings()).previous_secrets_forgotten == 1
    assert stored(ending["id"]) == (None, None)
    assert stored(lasting["id"])[0] == lasting["secret"]
    assert client.get(f"/v1/webhooks/{ending['id']}").json()[
        "previous_secret_expires_at"] is None


def test_failing_receiver_gives_up_after_max_attempts(client: TestClient,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allowlist", ["127.0.0.1"])
    monkeypatch.setattr(settings, "webhook_backoff_seconds", 0.0)
    monkeypatch.setattr(settings, "webhook_max_attempts", 2)
    receiver = Receiver(fail_first=99)
    client.post("/v1/webhooks", json={"url": receiver.url})
    client.post("/v1/takedowns", json=TD)
    for _ in range(6):
        webhooks.deliver_due(settings)
    with session_scope() as session:
        rows = session.scalars(select(WebhookDelivery)).all()
        assert rows and all(r.state == "failed" and len(r.attempts) == 2 for r in rows)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://10.1.2.3/x", "http://169.254.169.254/latest/meta-data",
    "http://[::1]/x", "http://localhost/x", "http://[::ffff:127.0.0.1]/x",
    "http://192.168.0.1/x", "http://[fd00:ec2::254]/x", "http://loopback.test/x"])
def test_ssrf_refused(url: str, client: TestClient) -> None:
    def fake_dns(host: str) -> list[str]:
        return ["127.0.0.1"] if host in ("loopback.test", "localhost") else ["93.184.216.34"]

    with pytest.raises(webhooks.UnsafeURL):
        webhooks.check_url(url, [], resolver=fake_dns)
    if "loopback.test" not in url:
        r = client.post("/v1/webhooks", json={"url": url})
        assert r.status_code == 422, (url, r.text)
        assert client.post("/v1/takedowns", json={**TD, "callback_url": url}).status_code == 422
    webhooks.check_url("https://hooks.example/x", [], resolver=fake_dns)
    webhooks.check_url(url, ["127.0.0.0/8", "::1", "10.0.0.0/8", "169.254.0.0/16",
                             "192.168.0.0/16", "fd00::/8", "localhost", "loopback.test"],
                       resolver=fake_dns)


# --- quarantine, purge, export ------------------------------------------------------------

def build_export(client: TestClient, version_id: str,
                 monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """POST …/export, then run the worker task in-process with the stand-in folder builder."""
    from workers.tasks import run_export

    r = client.post(f"/v1/versions/{version_id}/export")
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/exports/{r.json()['id']}"
    assert client.get(f"/v1/versions/{version_id}/export").status_code == 409  # not built yet
    monkeypatch.setattr(get_settings(), "export_module", "tests.stand_in_engine")
    assert run_export(r.json()["id"], get_settings()) == "completed"
    done = client.get(r.headers["location"]).json()
    assert done["state"] == "completed" and done["download_url"], done
    again = client.post(f"/v1/versions/{version_id}/export").json()
    assert again["id"] == done["id"]  # built once, reused
    return dict(done)


def test_quarantine_purge_export(client: TestClient, data_dir: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    td = client.post("/v1/takedowns", json=TD).json()
    assert run_unlearn_job(td["job_id"], get_settings()) == "completed"
    v1_export = build_export(client, client.get("/v1/models/conceptworld/versions").json()[1]
                             ["id"], monkeypatch)
    v1_tar = Path(data_dir / "exports" / f"{v1_export['id']}.tar")
    assert v1_tar.is_file()
    td2 = client.post("/v1/takedowns", json={**TD, "concept": "van gogh", "kind": "style"}).json()
    assert run_unlearn_job(td2["job_id"], get_settings()) == "completed"
    v0, v1, v2 = client.get("/v1/models/conceptworld/versions").json()
    assert v0["quarantined_at"] and v1["quarantined_at"] and not v2["quarantined_at"]
    assert client.get(f"/v1/versions/{v1['id']}/download").status_code == 451
    assert client.get(f"/v1/versions/{v1['id']}/export").status_code == 451
    assert client.post(f"/v1/versions/{v1['id']}/export").status_code == 451
    assert client.post(f"/v1/versions/{v1['id']}/samples", json={"prompt": "x"}).status_code \
        == 451
    model_id = v0["model_id"]
    move = client.put(f"/v1/models/{model_id}/aliases/production", json={"version_id": v1["id"]})
    assert move.status_code == 451
    artifact = Path(v1["artifact_uri"].removeprefix("file://"))
    assert artifact.exists()
    purged = client.post(f"/v1/versions/{v1['id']}/purge", json={"reason": "takedown done"})
    assert purged.status_code == 200 and purged.json()["purged_at"], purged.text
    assert not artifact.exists()
    assert not v1_tar.exists(), "purge must delete built exports too"
    assert client.get(f"/v1/exports/{v1_export['id']}").json()["state"] == "purged"
    assert client.get(f"/v1/versions/{v1['id']}/download").status_code == 410
    assert client.get(f"/v1/versions/{v1['id']}/export").status_code == 410
    assert client.post(f"/v1/versions/{v1['id']}/export").status_code == 410
    assert client.get(f"/v1/audit?action=version.purged&target_id={v1['id']}").json()["items"]
    assert client.post(f"/v1/versions/{v2['id']}/purge", json={}).status_code == 409
    # production still loads: its artifact is intact and downloadable
    got = client.get(f"/v1/versions/{v2['id']}/download")
    assert got.status_code == 200
    names = tarfile.open(fileobj=io.BytesIO(got.content)).getnames()
    assert "weights.safetensors" in names
    assert client.get(f"/v1/versions/{v2['id']}/export").status_code == 404  # never requested
    build_export(client, v2["id"], monkeypatch)
    export = client.get(f"/v1/versions/{v2['id']}/export")
    assert export.status_code == 200
    tar = tarfile.open(fileobj=io.BytesIO(export.content))
    manifest = tar.extractfile("lethe/manifest.json").read()  # type: ignore[union-attr]
    sig = tar.extractfile("lethe/manifest.sig").read().decode()  # type: ignore[union-attr]
    assert hmac.compare_digest(sig, hmac.new(get_settings().hmac_key, manifest,
                                             hashlib.sha256).hexdigest())
    assert json.loads(manifest)["forgotten"] == ["red tulip", "van gogh"]
    assert "unet/diffusion_pytorch_model.safetensors" in tar.getnames()
    assert set(json.loads(manifest)["files"]) == set(tar.getnames()) - {
        "lethe/manifest.json", "lethe/manifest.sig"}
    report = client.get(f"/v1/takedowns/{td2['id']}/report").json()
    assert report["versions"]["after"]["id"] == v2["id"]
    assert report["versions"]["after"]["production"] is True
    # where the concept still is, and that none of it can be served: the evidence a
    # claimant asks for
    assert [(v["number"], v["production"], bool(v["quarantined_at"]), bool(v["purged_at"]))
            for v in report["still_drawn_by"]] == [(0, False, True, False),
                                                   (1, False, True, True)]
    assert any(a["action"] == "takedown.completed" for a in report["audit"])
    page = client.get(f"/v1/takedowns/{td2['id']}/report?format=html")
    assert page.headers["content-type"].startswith("text/html") and "van gogh" in page.text
    assert "Versions that still draw it" in page.text
    # and what the erasure cannot promise: the weights can still be taught the concept
    assert "textual inversion" in report["limits"]["weights"]
    assert "What the erasure does not do" in page.text and "textual inversion" in page.text
    over = client.put(f"/v1/models/{model_id}/aliases/staging",
                      json={"version_id": v0["id"], "override_quarantine": True})
    assert over.status_code == 200
    assert client.get("/v1/audit?action=alias.quarantine_override").json()["items"]


def test_auto_purge_after_grace(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.services.reconciler import reconcile_once

    td = client.post("/v1/takedowns", json=TD).json()
    run_unlearn_job(td["job_id"], get_settings())
    td2 = client.post("/v1/takedowns", json={**TD, "concept": "van gogh", "kind": "style"}).json()
    run_unlearn_job(td2["job_id"], get_settings())
    settings = get_settings()
    monkeypatch.setattr(settings, "purge_grace_seconds", 0.0)
    swept = reconcile_once(settings)
    v1 = client.get("/v1/models/conceptworld/versions").json()[1]
    assert swept.purged == [v1["id"]] and v1["purged_at"]
    assert client.get("/v1/audit/verify").json()["ok"] is True


def test_a_version_under_legal_hold_is_never_purged_until_the_hold_is_released(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Purging a version a court case may need destroys evidence: a hold stops every purge."""
    from app.services.reconciler import reconcile_once

    settings = get_settings()
    for concept, kind in (("red tulip", "object"), ("van gogh", "style")):
        td = client.post("/v1/takedowns", json={**TD, "concept": concept, "kind": kind}).json()
        assert run_unlearn_job(td["job_id"], settings) == "completed"
    v1 = client.get("/v1/models/conceptworld/versions").json()[1]
    assert v1["quarantined_at"] and v1["legal_hold"] is None
    hold = f"/v1/versions/{v1['id']}/hold"
    assert client.post(hold, json={"reason": ""}).status_code == 422
    assert client.post(hold, json={}).status_code == 422
    assert client.post("/v1/versions/nope/hold", json={"reason": "x"}).status_code == 404
    held = client.post(hold, json={"reason": "Tulip Co v. Lethe: preserve"})
    assert held.status_code == 200, held.text
    assert held.json()["legal_hold"]["reason"] == "Tulip Co v. Lethe: preserve"
    assert held.json()["legal_hold"]["placed_by"].startswith("key:")
    again = client.post(hold, json={"reason": "again"})
    assert again.status_code == 409 and "Tulip Co" in again.json()["detail"]

    purge = client.post(f"/v1/versions/{v1['id']}/purge", json={})
    assert purge.status_code == 409 and "legal hold" in purge.json()["detail"]
    monkeypatch.setattr(settings, "purge_grace_seconds", 0.0)
    assert reconcile_once(settings).purged == []
    assert client.get(f"/v1/versions/{v1['id']}").json()["purged_at"] is None

    released = client.delete(hold)
    assert released.status_code == 200 and released.json()["legal_hold"] is None
    assert client.delete(hold).status_code == 409
    assert reconcile_once(settings).purged == [v1["id"]]
    assert client.post(hold, json={"reason": "too late"}).status_code == 410
    audit = client.get(f"/v1/audit?target_id={v1['id']}").json()["items"]
    assert [e["action"] for e in audit][-3:] == ["version.held", "version.hold_released",
                                                 "version.purged"]


def test_a_purge_by_hand_during_the_sweep_neither_deadlocks_nor_leaves_half_a_purge(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep locked a stale export, then took the audit chain's lock to purge; a purge by
    hand held that lock and waited for the export: Postgres broke the deadlock after the
    artifact was deleted, leaving no tombstone and no audit row."""
    from datetime import timedelta

    from app.db.models import Export, ModelVersion
    from app.db.types import utcnow
    from app.services import quarantine, reconciler

    settings = get_settings()
    for concept, kind in (("red tulip", "object"), ("van gogh", "style")):
        td = client.post("/v1/takedowns", json={**TD, "concept": concept, "kind": kind}).json()
        assert run_unlearn_job(td["job_id"], settings) == "completed"
    v1 = client.get("/v1/models/conceptworld/versions").json()[1]
    with session_scope() as session:
        session.add(Export(version_id=v1["id"], state="running", attempts=1, size_bytes=0,
                           started_at=utcnow() - timedelta(hours=1)))
    monkeypatch.setattr(settings, "preview_stale_seconds", 1.0)
    monkeypatch.setattr(settings, "purge_grace_seconds", 1e9)
    holding = threading.Event()
    stale_running = reconciler._stale_running

    def hold_the_export(*args: Any) -> None:
        stale_running(*args)
        holding.set()
        time.sleep(1.5)

    monkeypatch.setattr(reconciler, "_stale_running", hold_the_export)
    swept: list[BaseException | None] = []

    def sweep() -> None:
        try:
            reconciler.reconcile_once(settings)
            swept.append(None)
        except BaseException as exc:  # noqa: B036 — reported below
            swept.append(exc)

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    assert holding.wait(10)
    with session_scope() as session:
        version = session.get(ModelVersion, v1["id"])
        assert version is not None
        quarantine.purge(session, settings, version, reason="by hand")
    sweeper.join(timeout=30)
    assert swept == [None]
    assert client.get(f"/v1/versions/{v1['id']}").json()["purged_at"]
    actions = [e["action"] for e in client.get(f"/v1/audit?target_id={v1['id']}").json()["items"]]
    assert actions[-1] == "version.purged"


def test_stale_running_preview_is_resent_then_failed(client: TestClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A preview whose worker died while rendering stays `running` (its redelivered message is
    skipped); the reconciler queues it again, and fails it after max_attempts."""
    from datetime import timedelta

    from app.db.models import Preview
    from app.db.types import utcnow
    from app.services.reconciler import reconcile_once

    v0 = client.get("/v1/models/conceptworld/versions").json()[0]
    preview_id = client.post(f"/v1/versions/{v0['id']}/samples",
                             json={"prompt": "a tulip"}).json()["id"]
    settings = get_settings()
    monkeypatch.setattr(settings, "preview_stale_seconds", 60.0)

    def die_while_running(attempts: int) -> None:
        with session_scope() as session:
            row = session.get(Preview, preview_id)
            assert row is not None
            row.state, row.attempts = "running", attempts
            row.started_at = utcnow() - timedelta(seconds=120)

    die_while_running(1)
    assert preview_id in reconcile_once(settings).previews
    assert client.get(f"/v1/samples/{preview_id}").json()["state"] == "queued"
    die_while_running(settings.max_attempts)
    assert preview_id in reconcile_once(settings).stale_failed
    failed = client.get(f"/v1/samples/{preview_id}").json()
    assert failed["state"] == "failed" and "worker lost" in failed["error"]


def test_an_export_writes_its_tar_with_no_database_connection_held(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tar was written inside a transaction: on SQLite (the embedded default) that holds
    the write lock, so a large model's export kept every intake waiting."""
    from app.services import exports

    write = exports.write_tar
    held: list[int] = []

    def watched(*args: Any) -> Any:
        held.append(get_engine().pool.checkedout())  # type: ignore[attr-defined]
        return write(*args)

    monkeypatch.setattr(exports, "write_tar", watched)
    v0 = client.get("/v1/models/conceptworld/versions").json()[0]
    build_export(client, v0["id"], monkeypatch)
    assert held == [0]


def test_no_preview_image_outlives_its_versions_quarantine(
        client: TestClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A preview rendering while its version was quarantined or purged wrote its images
    after the purge had deleted the folder, and served them."""
    import tests.stand_in_engine as stand_in
    from app.db.models import ModelVersion
    from app.db.types import utcnow
    from workers.tasks import run_preview

    v0 = client.get("/v1/models/conceptworld/versions").json()[0]
    settings = get_settings()
    draw = stand_in.render_samples

    def quarantined_meanwhile(*args: Any) -> Any:
        images = draw(*args)
        with session_scope() as session:
            version = session.get(ModelVersion, v0["id"])
            assert version is not None
            version.quarantined_at, version.quarantine_reason = utcnow(), "by a test"
        return images

    monkeypatch.setattr(stand_in, "render_samples", quarantined_meanwhile)
    during = client.post(f"/v1/versions/{v0['id']}/samples", json={"prompt": "a tulip"}).json()
    assert run_preview(during["id"], settings) == "failed"
    got = client.get(f"/v1/samples/{during['id']}").json()
    assert got["image_urls"] == [] and "while its images were drawn" in got["error"]
    assert not (settings.previews_dir / during["id"]).exists()
    with session_scope() as session:  # queued before the quarantine, drawn after it
        from app.db.models import Preview

        session.add(Preview(id="late", version_id=v0["id"], prompt="a tulip", seed=0, n=1,
                            state="queued", images=[]))
    assert run_preview("late", settings) == "failed"
    assert "before its images were drawn" in client.get("/v1/samples/late").json()["error"]


@pytest.mark.parametrize("call", [
    ("post", "/v1/takedowns", {**TD, "concept": "red\u0000tulip"}),
    ("get", "/v1/models/a%00b", None),
    ("get", "/v1/takedowns?model=a%00b", None),
    ("post", "/v1/models", {"name": "x", "path": "0" * 1000}),
    ("post", "/v1/models", {"name": "x", "path": "a\u0000b"}),
    # a time that exists in its zone but not in UTC (past year 9999 or before year 1)
    ("post", "/v1/takedowns", {**TD, "due_at": "9999-12-31T23:00:00-05:00"}),
    ("get", "/v1/takedowns?since=0001-01-01T00:00:00%2B01:00", None),
    ("get", "/v1/reports/transparency?until=0001-01-01T00:00:00%2B01:00", None),
    ("get", "/v1/reports/takedowns.csv?since=0001-01-01T00:00:00%2B01:00", None),
])
def test_unstorable_input_is_422_not_5xx(call: tuple[str, str, Any], client: TestClient) -> None:
    method, url, body = call
    r = client.request(method.upper(), url, json=body)
    assert r.status_code == 422, r.text


def test_quarantine_compares_concepts_as_the_catalog_does(client: TestClient) -> None:
    """A version that erased "Red  Tulip" erased "red tulip": spelling is not a concept."""
    from app.db.models import ModelVersion
    from app.services import quarantine

    model_id = client.get("/v1/models/conceptworld/versions").json()[0]["model_id"]
    with session_scope() as session:
        spelt = ModelVersion(model_id=model_id, number=1, erased=["Red  Tulip"], status="ready")
        lacking = ModelVersion(model_id=model_id, number=2, erased=[], status="ready")
        production = ModelVersion(model_id=model_id, number=3, erased=["red tulip"],
                                  status="ready")
        session.add_all([spelt, lacking, production])
        session.flush()
        done = quarantine.quarantine_superseded(session, production)
        assert lacking.id in done and spelt.id not in done
        assert spelt.quarantined_at is None
        assert lacking.quarantine_reason == "still contains erased concepts: ['red tulip']"


def test_downloads_leave_no_open_file_behind(client: TestClient) -> None:
    """Each download's temporary tar kept an open descriptor: its disk space stayed taken
    after the file was deleted, until the process ran out of descriptors."""
    import os

    td = client.post("/v1/takedowns", json=TD).json()
    assert run_unlearn_job(td["job_id"], get_settings()) == "completed"
    version = client.get("/v1/models/conceptworld/versions").json()[1]["id"]
    assert client.get(f"/v1/versions/{version}/download").status_code == 200  # warm
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        assert client.get(f"/v1/versions/{version}/download").status_code == 200
    assert len(os.listdir("/proc/self/fd")) < before + 5

