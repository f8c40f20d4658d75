"""DMCA 512(g) counter-notices: the record, the restore window, and a claimant's suit."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.services import counter_notices, webhooks
from app.services.business_days import business_days_after, federal_holidays
from app.services.reconciler import reconcile_once
from app.settings import Settings, get_settings
from tests.app.test_compliance import TD, Receiver
from workers.tasks import run_unlearn_job

DMCA = {**TD, "legal_basis": "dmca", "prompts": ["a red tulip"], "legal": {
    "work_identification": "Tulip photo series", "good_faith_statement": True,
    "accuracy_statement": True, "authority_under_perjury": True,
    "signature": {"name": "A. Rights", "signed_at": "2026-01-01T00:00:00Z"}}}
COUNTER = {
    "name": "B. Painter", "email": "painter@example.org", "address": "1 Canvas Road, Arles",
    "phone": "+33 4 90 00 00 00",
    "material_identification": "the model's drawings of red tulips, from 'a red tulip'",
    "mistake_statement": True, "consent_to_jurisdiction": True,
    "signature": {"name": "B. Painter", "signed_at": "2026-12-04T09:00:00Z"}}
SUIT = {"court": "N.D. Cal.", "case_number": "5:26-cv-01234", "filed_at": "2026-12-01T00:00:00Z"}


NEW_YORK = "America/New_York"


def test_ten_and_fourteen_business_days_skip_weekends_and_federal_holidays() -> None:
    friday = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)
    assert business_days_after(friday, 10, NEW_YORK) == datetime(2026, 12, 18, 15, 30, tzinfo=UTC)
    assert business_days_after(friday, 14, NEW_YORK) == datetime(2026, 12, 24, 15, 30, tzinfo=UTC)
    saturday = friday + timedelta(days=1)  # received on a weekend: counted from Monday
    assert business_days_after(saturday, 10, NEW_YORK) == datetime(2026, 12, 18, 15, 30,
                                                                   tzinfo=UTC)
    assert business_days_after(saturday, 1, NEW_YORK).weekday() == 0
    # Christmas (Friday) and New Year's Day (Friday) are not business days.
    before_christmas = datetime(2026, 12, 18, 14, 0, tzinfo=UTC)
    assert business_days_after(before_christmas, 10, NEW_YORK) == datetime(2027, 1, 5, 14, 0,
                                                                           tzinfo=UTC)
    assert business_days_after(before_christmas, 14, NEW_YORK) == datetime(2027, 1, 11, 14, 0,
                                                                           tzinfo=UTC)
    # New Year's Day 2028, a Saturday, is observed on Friday 31 December 2027.
    thursday = datetime(2027, 12, 30, 15, 0, tzinfo=UTC)
    assert business_days_after(thursday, 1, NEW_YORK) == datetime(2028, 1, 3, 15, 0, tzinfo=UTC)


def test_business_days_are_the_designated_agents() -> None:
    """Friday 20:00 in New York is Saturday 01:00 in UTC: still a Friday's receipt, and the
    window keeps New York's wall-clock time across a change to summer time."""
    friday_evening = datetime(2026, 12, 4, 20, 0, tzinfo=ZoneInfo(NEW_YORK))
    assert business_days_after(friday_evening, 10, NEW_YORK) == datetime(
        2026, 12, 18, 20, 0, tzinfo=ZoneInfo(NEW_YORK))
    # Counted in UTC it would open on Thursday evening in New York, nine business days on.
    assert business_days_after(friday_evening, 10, "UTC") == datetime(
        2026, 12, 18, 1, 0, tzinfo=UTC)
    before_summer_time = datetime(2027, 3, 5, 12, 0, tzinfo=ZoneInfo(NEW_YORK))  # 17:00 UTC
    assert business_days_after(before_summer_time, 10, NEW_YORK) == datetime(
        2027, 3, 19, 16, 0, tzinfo=UTC)
    for zone in ("Mars/Olympus_Mons", "America", "../etc"):
        with pytest.raises(ValidationError, match="not an IANA time zone"):
            Settings(business_timezone=zone)


def test_federal_holidays_are_those_federal_offices_observe() -> None:
    """OPM's published lists: a Saturday holiday is observed the Friday before, a Sunday one
    the Monday after, and New Year's Day 2028 (a Saturday) on 31 December 2027."""
    assert sorted(federal_holidays(2026)) == [date(2026, *d) for d in (
        (1, 1), (1, 19), (2, 16), (5, 25), (6, 19), (7, 3), (9, 7), (10, 12), (11, 11),
        (11, 26), (12, 25))]
    assert sorted(federal_holidays(2027)) == [date(2027, *d) for d in (
        (1, 1), (1, 18), (2, 15), (5, 31), (6, 18), (7, 5), (9, 6), (10, 11), (11, 11),
        (11, 25), (12, 24), (12, 31))]
    assert date(2020, 6, 19) not in federal_holidays(2020)  # Juneteenth is one since 2021


def completed_dmca(client: TestClient, concept: str = "red tulip",
                   kind: str = "object", **extra: Any) -> dict[str, Any]:
    td = client.post("/v1/takedowns", json={**DMCA, "concept": concept, "kind": kind,
                                            **extra})
    assert td.status_code == 202, td.text
    assert run_unlearn_job(td.json()["job_id"], get_settings()) == "completed"
    return dict(td.json())


def window_passes(monkeypatch: pytest.MonkeyPatch, record: dict[str, Any],
                  until: str) -> None:
    """The sweep's clock moves a minute past the restore window's `opens` or `closes`."""
    later = datetime.fromisoformat(record["restore_window"][until]) + timedelta(minutes=1)
    monkeypatch.setattr(counter_notices, "utcnow", lambda: later)


def send_copy(client: TestClient, takedown_id: str) -> None:
    r = client.post(f"/v1/takedowns/{takedown_id}/counter-notice/copy-sent", json={
        "via": "email", "sent_at": datetime.now(UTC).isoformat()})
    assert r.status_code == 200, r.text


def test_a_counter_notice_is_checked_recorded_sent_and_opens_the_restore_window(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allowlist", ["127.0.0.1"])
    claimant_desk, operator_desk = Receiver(), Receiver()
    assert client.post("/v1/webhooks", json={"url": operator_desk.url}).status_code == 201
    td = completed_dmca(client, callback_url=claimant_desk.url)
    url = f"/v1/takedowns/{td['id']}/counter-notice"
    # 512(g)(3)(A)-(D): every element, and the two statements made, not just present
    for missing in ("signature", "material_identification", "address", "phone", "name"):
        r = client.post(url, json={k: v for k, v in COUNTER.items() if k != missing})
        assert r.status_code == 422, missing
    for statement in ("mistake_statement", "consent_to_jurisdiction"):
        r = client.post(url, json={**COUNTER, statement: False})
        assert r.status_code == 422 and statement in r.text, statement
    assert client.post(url, json={**COUNTER, "signature": {
        "name": "B", "signed_at": "2026-12-04T09:00:00"}}).status_code == 422  # no zone
    assert client.post("/v1/takedowns/nope/counter-notice", json=COUNTER).status_code == 404

    queued = client.post("/v1/takedowns", json={**DMCA, "concept": "van gogh",
                                                "kind": "style"}).json()
    early = client.post(f"/v1/takedowns/{queued['id']}/counter-notice", json=COUNTER)
    assert early.status_code == 409 and "queued" in early.json()["detail"]
    client.post(f"/v1/takedowns/{queued['id']}/cancel")
    copyright_td = client.post("/v1/takedowns", json={**TD, "concept": "van gogh",
                                                      "kind": "style"}).json()
    assert run_unlearn_job(copyright_td["job_id"], settings) == "completed"
    other = client.post(f"/v1/takedowns/{copyright_td['id']}/counter-notice", json=COUNTER)
    assert other.status_code == 409 and "dmca" in other.json()["detail"]

    before = datetime.now(UTC)
    r = client.post(url, json=COUNTER)
    assert r.status_code == 200, r.text
    record = r.json()["legal"]["counter_notice"]
    assert record["counter_notifier"] == {k: COUNTER[k] for k in
                                          ("name", "email", "address", "phone")}
    assert record["by"].startswith("key:") and record["suit"] is None
    received = datetime.fromisoformat(record["received_at"])
    assert before - timedelta(seconds=5) <= received <= datetime.now(UTC)
    window = record["restore_window"]
    assert window == {"opens": business_days_after(received, 10, NEW_YORK).isoformat(),
                      "closes": business_days_after(received, 14, NEW_YORK).isoformat(),
                      "zone": NEW_YORK}
    assert record["window_opened_at"] is None
    assert r.json()["state"] == "completed"  # the erasure stands: restoring is a person's act
    again = client.post(url, json=COUNTER)
    assert again.status_code == 409 and "already" in again.json()["detail"]

    assert reconcile_once(settings).restore_windows_opened == []  # ten business days to go
    window_passes(monkeypatch, record, "opens")
    assert reconcile_once(settings).restore_windows_opened == []  # the claimant's copy waits
    send_copy(client, td["id"])
    assert reconcile_once(settings).restore_windows_opened == [td["id"]]
    swept = reconcile_once(settings)
    assert swept.restore_windows_opened == swept.restore_windows_closed == []  # told once
    opened = client.get(f"/v1/takedowns/{td['id']}").json()["legal"]["counter_notice"]
    assert opened["window_opened_at"] and opened["late"] is False
    assert opened["claimant_copy"]["via"] == "email" and opened["window_closed_at"] is None
    window_passes(monkeypatch, record, "closes")  # nobody restored the material
    assert reconcile_once(settings).restore_windows_closed == [td["id"]]
    assert reconcile_once(settings).restore_windows_closed == []
    closed = client.get(f"/v1/takedowns/{td['id']}").json()["legal"]["counter_notice"]
    assert closed["window_closed_at"] and closed["restored"] is False

    audit = client.get(f"/v1/audit?target_id={td['id']}").json()["items"]
    actions = [e["action"] for e in audit]
    assert actions[-4:] == ["takedown.counter_noticed", "takedown.counter_notice_copy_sent",
                            "takedown.restore_window_opened", "takedown.restore_window_closed"]
    assert audit[-4]["data"] == {"received_at": record["received_at"],
                                 "restore_window": window}  # no personal data, ever
    assert audit[-1]["data"] == {"restore_window": window, "restored": False}
    assert client.get("/v1/audit/verify").json()["ok"] is True
    report = client.get(f"/v1/takedowns/{td['id']}/report").json()
    assert report["takedown"]["legal"]["counter_notice"]["restore_window"] == window

    # 512(g)(2)(B): the claimant gets a copy of the counter-notice; other subscribers its
    # dates, never the counter-notifier's name, address or phone
    webhooks.deliver_due(settings)
    sent = [json.loads(body) for _, body in claimant_desk.got]
    told = [(m["type"], m["data"]["counter_notice"]["counter_notifier"]["name"])
            for m in sent if m["data"]["counter_notice"]]
    assert told == [("takedown.counter_noticed", "B. Painter"),
                    ("takedown.restore_window_opened", "B. Painter"),
                    ("takedown.restore_window_closed", "B. Painter")]
    seen = [json.loads(body) for _, body in operator_desk.got]
    summary = [m["data"]["counter_notice"] for m in seen if m["data"].get("counter_notice")]
    assert [m["type"] for m in seen if m["data"].get("counter_notice")] == [
        "takedown.counter_noticed", "takedown.restore_window_opened",
        "takedown.restore_window_closed"]
    assert set(summary[0]) == {"received_at", "restore_window", "suit", "window_opened_at",
                               "late", "window_closed_at", "restored"}
    assert summary[-1]["restored"] is False
    assert not any("+33 4 90" in body.decode() or "Canvas" in body.decode()
                   for _, body in operator_desk.got)


def test_the_window_waits_for_the_claimants_copy_and_a_rescinded_notice_has_none(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window opens only once the claimant was sent its copy; sent late, it says so."""
    settings = get_settings()
    td = completed_dmca(client)
    url = f"/v1/takedowns/{td['id']}/counter-notice"
    copy_url = f"{url}/copy-sent"
    copy = {"via": "email", "sent_at": datetime.now(UTC).isoformat()}
    assert client.post(copy_url, json=copy).status_code == 409  # nothing to copy yet
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    future = client.post(url, json={**COUNTER, "received_at": tomorrow})
    assert future.status_code == 422 and "received_at" in future.json()["detail"]
    stale = client.post(url, json={**COUNTER, "received_at": "2020-01-01T00:00:00Z"})
    assert stale.status_code == 422 and "before the notice" in stale.json()["detail"]
    received = datetime.fromisoformat(td["created_at"]) + timedelta(seconds=1)
    tokyo = received.astimezone(timezone(timedelta(hours=9)))  # the same instant
    r = client.post(url, json={**COUNTER, "received_at": tokyo.isoformat()})
    assert r.status_code == 200, r.text
    record = r.json()["legal"]["counter_notice"]
    assert datetime.fromisoformat(record["received_at"]) == received
    opens = business_days_after(received, 10, NEW_YORK)
    assert record["restore_window"]["opens"] == opens.isoformat()
    assert record["claimant_copy"] is None

    window_passes(monkeypatch, record, "closes")  # the copy goes out after the window closed
    copy["sent_at"] = (datetime.fromisoformat(record["restore_window"]["closes"])
                       + timedelta(seconds=30)).isoformat()
    assert reconcile_once(settings).restore_windows_opened == []
    before_receipt = (received - timedelta(minutes=1)).isoformat()
    for bad in ({**copy, "via": ""}, {**copy, "sent_at": "2026-12-08T00:00:00"},
                {"via": "post"}, {**copy, "sent_at": before_receipt}):
        assert client.post(copy_url, json=bad).status_code == 422, bad
    sent = client.post(copy_url, json=copy)
    assert sent.status_code == 200, sent.text
    recorded = sent.json()["legal"]["counter_notice"]["claimant_copy"]
    assert recorded["via"] == copy["via"] and recorded["recorded_by"].startswith("key:")
    assert datetime.fromisoformat(recorded["sent_at"]) == datetime.fromisoformat(copy["sent_at"])
    again = client.post(copy_url, json=copy)
    assert again.status_code == 409 and "already" in again.json()["detail"]
    swept = reconcile_once(settings)  # opened late, and closed at once
    assert swept.restore_windows_opened == swept.restore_windows_closed == [td["id"]]
    opened = client.get(f"/v1/takedowns/{td['id']}").json()["legal"]["counter_notice"]
    assert opened["late"] is True and opened["window_closed_at"]

    withdrawn = completed_dmca(client, "van gogh", "style")
    client.post(f"/v1/takedowns/{withdrawn['id']}/rescind", json={"reason": "settled"})
    late = client.post(f"/v1/takedowns/{withdrawn['id']}/counter-notice", json=COUNTER)
    assert late.status_code == 409 and "rescinded" in late.json()["detail"]


def test_a_claimants_suit_keeps_the_restore_window_shut(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allowlist", ["127.0.0.1"])
    desk = Receiver()
    assert client.post("/v1/webhooks", json={
        "url": desk.url, "events": ["takedown.suit_filed"]}).status_code == 201
    td = completed_dmca(client)
    suit_url = f"/v1/takedowns/{td['id']}/counter-notice/suit"
    no_counter = client.post(suit_url, json=SUIT)
    assert no_counter.status_code == 409 and "counter-notice" in no_counter.json()["detail"]
    counter = client.post(f"/v1/takedowns/{td['id']}/counter-notice", json=COUNTER)
    assert counter.status_code == 200
    send_copy(client, td["id"])
    no_suit = completed_dmca(client, "van gogh", "style")  # the same, with no suit
    assert client.post(f"/v1/takedowns/{no_suit['id']}/counter-notice", json=COUNTER
                       ).status_code == 200
    send_copy(client, no_suit["id"])
    next_year = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    for bad in ({**SUIT, "court": ""}, {k: v for k, v in SUIT.items() if k != "case_number"},
                {**SUIT, "filed_at": "2026-12-08T00:00:00"}, {**SUIT, "extra": 1},
                {**SUIT, "filed_at": next_year}):
        assert client.post(suit_url, json=bad).status_code == 422, bad
    r = client.post(suit_url, json=SUIT)
    assert r.status_code == 200, r.text
    suit = r.json()["legal"]["counter_notice"]["suit"]
    assert suit | {"recorded_at": "", "by": ""} == {
        "court": "N.D. Cal.", "case_number": "5:26-cv-01234",
        "filed_at": "2026-12-01T00:00:00Z", "recorded_at": "", "by": ""}
    assert client.post(suit_url, json=SUIT).status_code == 409
    window_passes(monkeypatch, counter.json()["legal"]["counter_notice"], "opens")
    assert reconcile_once(settings).restore_windows_opened == [no_suit["id"]]  # suit first
    assert client.get(f"/v1/takedowns/{td['id']}").json()["legal"]["counter_notice"][
        "window_opened_at"] is None
    webhooks.deliver_due(settings)
    assert [json.loads(body)["type"] for _, body in desk.got] == ["takedown.suit_filed"]
    audit = client.get(f"/v1/audit?target_id={td['id']}&action=takedown.suit_filed").json()
    assert [e["data"]["case_number"] for e in audit["items"]] == ["5:26-cv-01234"]


def test_a_window_closes_restored_when_production_draws_the_concept_again(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator who restores the material moves production back to a version that still
    draws it; the window's close says so."""
    settings = get_settings()
    td = completed_dmca(client)
    r = client.post(f"/v1/takedowns/{td['id']}/counter-notice", json=COUNTER)
    record = r.json()["legal"]["counter_notice"]
    send_copy(client, td["id"])
    window_passes(monkeypatch, record, "opens")
    assert reconcile_once(settings).restore_windows_opened == [td["id"]]
    erased = client.get(f"/v1/takedowns/{td['id']}").json()["result"]["version"]
    assert client.get(f"/v1/models/{td['model_id']}").json()["production_version_id"] == erased
    parent = client.get(f"/v1/versions/{erased}").json()["parent_id"]
    restore = client.put(f"/v1/models/{td['model_id']}/aliases/production", json={
        "version_id": parent, "reason": "counter-notice: restored", "override_quarantine": True})
    assert restore.status_code == 200, restore.text
    window_passes(monkeypatch, record, "closes")
    assert reconcile_once(settings).restore_windows_closed == [td["id"]]
    closed = client.get(f"/v1/takedowns/{td['id']}").json()["legal"]["counter_notice"]
    assert closed["restored"] is True
    audit = client.get(f"/v1/audit?target_id={td['id']}"
                       "&action=takedown.restore_window_closed").json()["items"]
    assert [e["data"]["restored"] for e in audit] == [True]


def test_a_copy_sent_in_time_is_not_late_when_the_sweep_is(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reconciler was down past the window's close: the window opens and closes in one
    sweep, but the claimant's copy went out in time, so it is not late."""
    td = completed_dmca(client)
    record = client.post(f"/v1/takedowns/{td['id']}/counter-notice",
                         json=COUNTER).json()["legal"]["counter_notice"]
    send_copy(client, td["id"])
    window_passes(monkeypatch, record, "closes")
    swept = reconcile_once(get_settings())
    assert swept.restore_windows_opened == swept.restore_windows_closed == [td["id"]]
    counter = client.get(f"/v1/takedowns/{td['id']}").json()["legal"]["counter_notice"]
    assert counter["late"] is False and counter["restored"] is False


def test_a_record_the_sweep_cannot_read_holds_back_no_other_window(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.db.models import Takedown
    from app.db.session import session_scope

    broken, sound = completed_dmca(client), completed_dmca(client, "van gogh", "style")
    records = []
    for td in (broken, sound):
        records.append(client.post(f"/v1/takedowns/{td['id']}/counter-notice",
                                   json=COUNTER).json()["legal"]["counter_notice"])
        send_copy(client, td["id"])
    with session_scope() as session:  # written by hand, say: no window in it
        row = session.get(Takedown, broken["id"])
        assert row is not None
        row.legal = {**row.legal, "counter_notice": {**row.legal["counter_notice"],
                                                     "restore_window": {}}}
    window_passes(monkeypatch, records[1], "opens")
    swept = reconcile_once(get_settings())
    assert swept.restore_windows_opened == [sound["id"]]
