"""The transparency report: what DSA Art. 15(1)(b) asks a provider to publish about notices."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from app.db.models import Takedown
from app.db.session import session_scope
from app.services import transparency
from app.settings import get_settings
from tests.app.test_compliance import CLAIMANT, TD
from tests.conftest import create_key
from workers.tasks import run_unlearn_job

REPORT = "/v1/reports/transparency"


def test_the_report_counts_notices_by_basis_and_kind_their_outcomes_and_time_to_action(
        client: TestClient) -> None:
    settings = get_settings()
    start = datetime.now(UTC) - timedelta(seconds=1)
    done = client.post("/v1/takedowns", json=TD).json()
    assert run_unlearn_job(done["job_id"], settings) == "completed"
    style = client.post("/v1/takedowns", json={**TD, "concept": "van gogh",
                                               "kind": "style"}).json()
    assert run_unlearn_job(style["job_id"], settings) == "completed"
    refused = client.post("/v1/takedowns", json={**TD, "concept": "purple unicorn"}).json()
    assert refused["state"] == "rejected"
    gdpr = {**TD, "concept": "van gogh tulip", "legal_basis": "gdpr_art17"}
    cancelled = client.post("/v1/takedowns", json=gdpr).json()
    client.post(f"/v1/takedowns/{cancelled['id']}/rescind", json={"reason": "settled"})
    waiting = client.post("/v1/takedowns", json={**gdpr, "due_at": "2020-01-01T00:00:00Z"})
    assert waiting.json()["state"] == "queued"
    client.post(f"/v1/takedowns/{style['id']}/decision", json={
        "outcome": "partial", "statement_of_reasons": "Only the named paintings' style."})

    client.post(f"/v1/takedowns/{waiting.json()['id']}/cancel")  # ended after its due date
    with session_scope() as session:  # the erasure of red tulip took ten hours
        row = session.get(Takedown, done["id"])
        assert row is not None
        row.created_at -= timedelta(hours=10)

    r = client.get(REPORT, params={"since": (start - timedelta(hours=11)).isoformat()})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["notices"] == 5
    assert report["by_kind"] == {"object": 4, "style": 1}
    assert report["by_state"] == {"completed": 2, "rejected": 1, "cancelled": 2}
    assert report["decisions"] == {"accepted": 1, "partial": 1, "rejected": 1, "undecided": 2}
    assert report["decided_by_automated_means"] == 2 and report["decided_by_a_person"] == 1
    assert report["rescinded"] == 1 and report["counter_notices"] == 0
    assert report["open_overdue"] == 0 and report["ended_after_due"] == 1
    copyright_ = report["by_legal_basis"]["copyright"]
    assert copyright_ | {"median_hours_to_end": 0, "median_hours_to_erasure": 0} == {
        "notices": 3, "accepted": 1, "partial": 1, "rejected": 1, "undecided": 0,
        "median_hours_to_end": 0, "median_hours_to_erasure": 0}
    # the median of 10 h and a few seconds; of those and an instant refusal, the middle one
    assert 5 <= copyright_["median_hours_to_erasure"] < 5.01
    assert copyright_["median_hours_to_end"] < 0.01
    assert report["by_legal_basis"]["gdpr_art17"]["median_hours_to_erasure"] is None
    assert report["by_legal_basis"]["gdpr_art17"]["undecided"] == 2
    assert report["by_legal_basis"]["gdpr_art17"]["median_hours_to_end"] is not None
    assert set(report["by_legal_basis"]) == {"copyright", "gdpr_art17"}
    assert 5 <= report["median_hours_to_erasure"] < 5.01
    assert 0 <= report["median_hours_to_end"] < 0.01  # five ended: four within seconds

    until = datetime.now(UTC)
    later = client.post("/v1/takedowns", json={**TD, "concept": "van gogh tulip"}).json()
    assert later["state"] == "queued"
    window = client.get(REPORT, params={"since": start.isoformat(),
                                        "until": until.isoformat()}).json()
    assert window["notices"] == 4  # red tulip's was received before `start` now
    assert {k: datetime.fromisoformat(v) for k, v in window["period"].items()} == {
        "since": start, "until": until}
    assert client.get(REPORT).json()["notices"] == 6
    assert client.get(REPORT).json()["open_overdue"] == 0
    empty = client.get(REPORT, params={"since": (until + timedelta(days=1)).isoformat()}).json()
    assert empty["notices"] == 0 and empty["median_hours_to_end"] is None
    assert empty["by_legal_basis"] == {} and empty["decisions"]["undecided"] == 0


def test_a_report_asked_for_badly_is_refused_and_needs_a_reading_key(
        client: TestClient) -> None:
    now = datetime.now(UTC)
    backwards = client.get(REPORT, params={"since": now.isoformat(),
                                           "until": (now - timedelta(days=1)).isoformat()})
    assert backwards.status_code == 422 and "since" in backwards.json()["detail"]
    naive = client.get(REPORT, params={"since": "2026-01-01T00:00:00"})
    assert naive.status_code == 422
    assert client.get(REPORT, params={"since": "yesterday"}).status_code == 422
    writer = create_key(["takedowns:write"])
    assert client.get(REPORT, headers={"Authorization": f"Bearer {writer}"}).status_code == 403


def test_the_takedown_register_downloads_as_csv_without_personal_data(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compliance team keeps its register in a spreadsheet: every takedown a filter picks,
    one row each, no claimant's name or email, and no cell a spreadsheet would run."""
    monkeypatch.setattr(transparency, "REGISTER_PAGE", 1)  # every row on a page of its own
    settings = get_settings()
    done = client.post("/v1/takedowns", json={**TD, "external_ref": "T-1"}).json()
    assert run_unlearn_job(done["job_id"], settings) == "completed"
    sly = client.post("/v1/takedowns", json={
        **TD, "concept": '=HYPERLINK("http://evil.example","x")', "legal_basis": "dmca",
        "legal": {"work_identification": "w", "good_faith_statement": True,
                  "accuracy_statement": True, "authority_under_perjury": True,
                  "signature": {"name": "S", "signed_at": "2026-01-01T00:00:00Z"}},
        "prompts": ["p"], "external_ref": "+T-2"}).json()
    assert sly["state"] == "rejected"  # not in the catalog, still on record
    more = [client.post("/v1/takedowns", json={**TD, "concept": concept, "external_ref": ref}
                        ).json() for concept, ref in (("x;=1+1", "-T-3"), ("a\t=b", "@T-4"))]

    r = client.get("/v1/reports/takedowns.csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["id"] for row in rows] == [
        more[1]["id"], more[0]["id"], sly["id"], done["id"]]  # newest first, page by page
    assert [(row["concept"], row["external_ref"]) for row in rows[:2]] == [
        ("a\t'=b", "'@T-4"), ("x;'=1+1", "'-T-3")]
    first = rows[3]
    assert first | {"received_at": "", "due_at": "", "ended_at": "", "decided_at": "",
                    "version_id": ""} == {
        "id": done["id"], "received_at": "", "model_id": done["model_id"],
        "concept": "red tulip", "kind": "object", "legal_basis": "copyright",
        "state": "completed", "due_at": "", "overdue": "false", "ended_at": "",
        "outcome": "accepted", "automated": "true", "decided_at": "", "version_id": "",
        "external_ref": "T-1", "integration": "", "priority": "0", "rescinded": "false",
        "counter_notice": "false"}
    assert first["ended_at"] >= first["received_at"] and first["version_id"]
    assert rows[2]["concept"].startswith("'=") and rows[2]["external_ref"] == "'+T-2"
    assert CLAIMANT["email"] not in r.text and CLAIMANT["name"] not in r.text

    only = client.get("/v1/reports/takedowns.csv", params={"legal_basis": "dmca"})
    assert [row["id"] for row in csv.DictReader(io.StringIO(only.text))] == [sly["id"]]
    bad = client.get("/v1/reports/takedowns.csv", params={"since": "2026-01-01T00:00:00"})
    assert bad.status_code == 422
