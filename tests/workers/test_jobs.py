"""The worker's database logic, run in-process against real Postgres with the stand-in engine."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.db.models import Job, ModelVersion, Takedown
from app.db.session import session_scope
from app.db.types import utcnow
from app.services import dispatch, jobs
from app.services.gate import GateResult
from app.services.reconciler import reconcile_once
from app.settings import get_settings
from workers.tasks import run_unlearn_job

CLAIMANT = {"name": "A", "email": "a@example.com"}


def submit(client: TestClient, concept: str = "red tulip") -> dict:
    r = client.post("/v1/takedowns", json={"model": "conceptworld", "concept": concept,
                                           "kind": "object", "legal_basis": "copyright",
                                           "claimant": CLAIMANT})
    assert r.status_code == 202, r.text
    return r.json()


def versions(client: TestClient) -> list[dict]:
    return client.get("/v1/models/conceptworld/versions").json()


def test_step_commits_one_version_and_moves_production(client: TestClient) -> None:
    td = submit(client)
    assert run_unlearn_job(td["job_id"], get_settings()) == "completed"
    done = client.get(f"/v1/takedowns/{td['id']}").json()
    assert done["state"] == "completed", done
    assert done["progress"]["stage"] == "saving" and done["progress"]["percent"] == 100.0
    vs = versions(client)
    assert [v["number"] for v in vs] == [0, 1]
    assert vs[1]["parent_id"] == vs[0]["id"] and vs[1]["erased"] == ["red tulip"]
    assert vs[1]["digest"].startswith("sha256:") and vs[1]["size_bytes"] > 0
    assert done["result"]["version"] == vs[1]["id"]
    assert done["result"]["metrics"]["forget_acc"]["red tulip"] <= 0.05
    model = client.get("/v1/models/conceptworld").json()
    assert model["production_version_id"] == vs[1]["id"]
    # A duplicate delivery of the same message changes nothing.
    assert run_unlearn_job(td["job_id"], get_settings()) == "skipped"
    assert len(versions(client)) == 2
    # The next step builds on version 1 and carries the cumulative erased list.
    td2 = submit(client, "van gogh")
    run_unlearn_job(td2["job_id"], get_settings())
    assert versions(client)[2]["erased"] == ["red tulip", "van gogh"]
    assert versions(client)[2]["parent_id"] == vs[1]["id"]


def test_undefined_metrics_are_stored_and_served_as_null(client: TestClient) -> None:
    """NaN and infinity are not JSON: Postgres refuses them, and so does a strict parser."""
    td = submit(client, "lonely")
    assert run_unlearn_job(td["job_id"], get_settings()) == "completed"
    done = client.get(f"/v1/takedowns/{td['id']}")
    assert done.status_code == 200 and "NaN" not in done.text and "Infinity" not in done.text
    metrics = done.json()["result"]["metrics"]
    assert metrics["related"] == [] and metrics["related_retention"] is None
    assert metrics["final_losses"] == {"unlearn": None}
    assert metrics["gate"]["passed"], metrics["gate"]
    (stored,) = [v for v in versions(client) if v["erased"] == ["lonely"]]
    assert stored["metrics"]["related_retention"] is None


def _erased_in_turn(client: TestClient, *concepts: str) -> list[dict]:
    """Each concept's takedown, filed and its step run (completed) after the one before."""
    done = []
    for concept in concepts:
        td = submit(client, concept)
        assert run_unlearn_job(td["job_id"], get_settings()) == "completed"
        done.append(td)
    return done


def test_a_concept_erased_already_says_by_what_in_its_result_and_evidence(
        client: TestClient) -> None:
    first, td = _erased_in_turn(client, "van gogh", "van gogh tulip")
    result = client.get(f"/v1/takedowns/{td['id']}").json()["result"]
    assert result["covered_by"] == {"van gogh tulip": ["van gogh"]} and result["targets"] == {}
    report = client.get(f"/v1/takedowns/{td['id']}/report").json()
    assert report["covered_by"] == {"van gogh tulip": ["van gogh"]}
    page = client.get(f"/v1/takedowns/{td['id']}/report?format=html").text
    assert "van gogh tulip was erased already by van gogh" in page
    assert client.get(f"/v1/takedowns/{first['id']}/report").json()["covered_by"] == {}


def test_the_statement_of_reasons_names_the_covering_erasure_however_it_was_spelt(
        client: TestClient) -> None:
    _, td = _erased_in_turn(client, "van gogh", "Van Gogh  Tulip")
    reasons = client.get(f"/v1/takedowns/{td['id']}").json()["decision"]["statement_of_reasons"]
    assert "erased already by the earlier erasure of 'van gogh'" in reasons, reasons


def test_fenced_worker_cannot_commit(client: TestClient) -> None:
    td = submit(client)
    settings = get_settings()
    with session_scope() as s:
        first = jobs.claim(s, settings, td["job_id"], "worker-a")
    assert first is not None
    with session_scope() as s:  # worker-a goes silent; its lease runs out
        job = s.get(Job, td["job_id"])
        assert job is not None
        job.lease_expires_at = utcnow() - timedelta(seconds=1)
    with session_scope() as s:
        second = jobs.claim(s, settings, td["job_id"], "worker-b")
    assert second is not None and second.fence > first.fence
    step = jobs.StepResult("file:///x", "sha256:0", 1, ["red tulip"],
                           {"forget_acc": {"red tulip": 0.0}}, {}, {})
    with session_scope() as s:
        assert jobs.commit_version(s, first, step, GateResult(True)) is None
        held, _ = jobs.heartbeat(s, settings, first)
        assert not held
    with session_scope() as s:
        assert jobs.commit_version(s, second, step, GateResult(True)) is not None
    with session_scope() as s:
        assert len(list(s.scalars(select(ModelVersion)))) == 2


def test_a_job_claimed_past_a_silent_one_fences_it_and_the_lineage_stays_one(
        client: TestClient) -> None:
    """Job a's worker goes silent past its lease; job b of the same model, more urgent, is
    claimed (a goes back in line in the same transaction). a's worker wakes: its heartbeat
    and commit are refused, so a and b cannot both build on the same parent; a runs again
    after b, from b's version."""
    settings = get_settings()
    a = submit(client)
    with session_scope() as s:
        first = jobs.claim(s, settings, a["job_id"], "worker-a")
        assert first is not None
        job = s.get(Job, a["job_id"])
        assert job is not None
        job.lease_expires_at = utcnow() - timedelta(seconds=1)
    b = client.post("/v1/takedowns", json={
        "model": "conceptworld", "concept": "van gogh", "kind": "style",
        "legal_basis": "copyright", "claimant": CLAIMANT, "priority": 1}).json()
    assert b["job_id"] != a["job_id"]
    with session_scope() as s:
        second = jobs.claim(s, settings, b["job_id"], "worker-b")
    assert second is not None and second.job_id == b["job_id"]
    assert client.get(f"/v1/jobs/{a['job_id']}").json()["state"] == "queued"
    step = jobs.StepResult("file:///x", "sha256:0", 1, ["red tulip"],
                           {"forget_acc": {"red tulip": 0.0}}, {}, {})
    with session_scope() as s:
        held, _ = jobs.heartbeat(s, settings, first)
        assert not held
        assert jobs.commit_version(s, first, step, GateResult(True)) is None
    with session_scope() as s:
        assert jobs.commit_version(s, second, jobs.StepResult(
            "file:///y", "sha256:1", 1, ["van gogh"], {"forget_acc": {"van gogh": 0.0}}, {}, {}),
            GateResult(True)) is not None
    assert run_unlearn_job(a["job_id"], settings) == "completed"
    vs = versions(client)
    assert [v["parent_id"] for v in vs] == [None, vs[0]["id"], vs[1]["id"]]
    assert vs[2]["erased"] == ["van gogh", "red tulip"]
    assert client.get(f"/v1/takedowns/{a['id']}").json()["state"] == "completed"


def test_a_step_whose_parent_left_production_runs_again_from_the_new_one(
        client: TestClient) -> None:
    """An operator rolls production back while a step runs: the step must not move production
    off the rollback; it runs again from the version production now names."""
    settings = get_settings()
    tulip = submit(client)
    assert run_unlearn_job(tulip["job_id"], settings) == "completed"
    v0, v1 = versions(client)
    td = submit(client, "van gogh")
    with session_scope() as s:
        claimed = jobs.claim(s, settings, td["job_id"], "worker-a")
    assert claimed is not None and claimed.parent_version_id == v1["id"]
    back = client.put(f"/v1/models/{td['model_id']}/aliases/production",
                      json={"version_id": v0["id"], "override_quarantine": True,
                            "reason": "rollback"})
    assert back.status_code == 200, back.text
    step = jobs.StepResult("file:///x", "sha256:0", 1, ["red tulip", "van gogh"],
                           {"forget_acc": {"van gogh": 0.0}}, {}, {})
    with session_scope() as s:
        moved = jobs.commit_version(s, claimed, step, GateResult(True))
    assert moved == jobs.ParentMoved(td["job_id"], v0["id"])
    got = client.get(f"/v1/takedowns/{td['id']}").json()
    assert got["state"] == "queued", got
    assert len(versions(client)) == 2
    assert run_unlearn_job(td["job_id"], settings) == "completed"
    v2 = versions(client)[2]
    assert v2["parent_id"] == v0["id"] and v2["erased"] == ["van gogh"]
    assert client.get(f"/v1/models/{td['model_id']}").json()["production_version_id"] == v2["id"]


def test_a_retry_after_a_worker_died_past_its_upload_completes(client: TestClient) -> None:
    """The first attempt stored its artifact and died before committing; the retry's artifact
    differs (its manifest carries its own timings), and must be stored beside it, not checked
    against it."""
    settings = get_settings()
    td = submit(client)
    earlier = settings.artifacts_dir / td["model_id"] / td["job_id"]
    earlier.mkdir(parents=True)
    (earlier / "manifest.json").write_text('{"from": "the attempt that died"}')
    assert run_unlearn_job(td["job_id"], settings) == "completed"
    version = versions(client)[1]
    assert client.get(f"/v1/takedowns/{td['id']}").json()["state"] == "completed"
    assert (earlier / "manifest.json").read_text() == '{"from": "the attempt that died"}'
    assert version["digest"].removeprefix("sha256:")[:16] in version["artifact_uri"]


def test_gate_failure_keeps_production(client: TestClient) -> None:
    td = submit(client, "stubborn")
    base = client.get("/v1/models/conceptworld").json()["production_version_id"]
    assert run_unlearn_job(td["job_id"], get_settings()) == "gate_failed"
    got = client.get(f"/v1/takedowns/{td['id']}").json()
    assert got["state"] == "failed" and got["error"]["code"] == "gate_failed"
    assert "stubborn" in got["error"]["detail"]
    assert client.get("/v1/models/conceptworld").json()["production_version_id"] == base
    assert versions(client)[1]["status"] == "gate_failed"
    # A gate-failed version cannot be promoted by hand either.
    model_id = got["model_id"]
    r = client.put(f"/v1/models/{model_id}/aliases/production",
                   json={"version_id": versions(client)[1]["id"]})
    assert r.status_code == 422


def test_engine_error_fails_the_takedown(client: TestClient) -> None:
    td = submit(client, "explode")
    assert run_unlearn_job(td["job_id"], get_settings()) == "failed"
    got = client.get(f"/v1/takedowns/{td['id']}").json()
    assert got["state"] == "failed" and "exploded" in got["error"]["detail"]
    assert len(versions(client)) == 1


def test_a_refused_concept_fails_alone_and_its_step_mates_run_without_it(
        client: TestClient) -> None:
    tulip, impossible = submit(client), submit(client, "impossible")
    assert tulip["job_id"] == impossible["job_id"]  # merged into one step
    assert run_unlearn_job(tulip["job_id"], get_settings()) == "refused"
    got = client.get(f"/v1/takedowns/{impossible['id']}").json()
    assert got["state"] == "failed" and got["error"]["code"] == "no_safe_target"
    assert "cannot erase 'impossible'" in got["error"]["detail"]
    again = client.get(f"/v1/takedowns/{tulip['id']}").json()
    assert again["state"] == "queued" and again["job_id"] != tulip["job_id"]
    assert len(versions(client)) == 1  # the refused step registered nothing
    assert run_unlearn_job(again["job_id"], get_settings()) == "completed"
    assert versions(client)[1]["erased"] == ["red tulip"]
    assert client.get(f"/v1/takedowns/{tulip['id']}").json()["state"] == "completed"


def test_the_engine_is_asked_for_the_catalogs_own_spelling(client: TestClient) -> None:
    """Intake accepts "Red  TULIP" (the catalog compares names lower-cased, spaces collapsed),
    but the engine looked the raw name up: it erased an unknown concept, or none at all."""
    r = client.post("/v1/takedowns", json={
        "model": "conceptworld", "concept": "Red  TULIP", "kind": "object",
        "legal_basis": "copyright", "claimant": CLAIMANT, "neighbors": ["Yellow Tulip"]})
    td = r.json()
    assert td["state"] == "queued" and td["concept"] == "Red  TULIP"  # the record as filed
    with session_scope() as s:
        claimed = jobs.claim(s, get_settings(), td["job_id"], "w1")
        assert claimed is not None
        assert [(q.concept, q.neighbors) for q in claimed.requests] == [
            ("red tulip", ["yellow tulip"])]
        s.rollback()
    assert run_unlearn_job(td["job_id"], get_settings()) == "completed"
    assert versions(client)[1]["erased"] == ["red tulip"]
    with session_scope() as s:  # as a version made before kept it: as filed
        s.execute(update(ModelVersion).where(ModelVersion.id == versions(client)[1]["id"])
                  .values(erased=["Red  TULIP"]))
    later = submit(client, "van gogh")
    with session_scope() as s:
        claimed = jobs.claim(s, get_settings(), later["job_id"], "w2")
        assert claimed is not None and claimed.previously_erased == ["red tulip"]
        s.rollback()


def test_a_refused_concept_is_blamed_however_it_was_spelt(client: TestClient) -> None:
    tulip, impossible = submit(client), submit(client, "Impossible")
    assert run_unlearn_job(tulip["job_id"], get_settings()) == "refused"
    assert client.get(f"/v1/takedowns/{impossible['id']}").json()["state"] == "failed"
    assert client.get(f"/v1/takedowns/{tulip['id']}").json()["state"] == "queued"


def test_a_notice_whose_admission_was_lost_is_queued_by_the_reconciler(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Intake commits `received`, then queues in a second transaction; a process killed (or
    a lock timeout) in between left the takedown `received` forever, as no sweep looked."""
    from app.services import takedowns

    def killed(*_: object) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(takedowns, "enqueue", killed)
    r = client.post("/v1/takedowns", json={"model": "conceptworld", "concept": "red tulip",
                                           "kind": "object", "legal_basis": "copyright",
                                           "claimant": CLAIMANT})
    assert r.status_code == 202 and r.json()["state"] == "received", r.text  # filed, not lost
    unknown = client.post("/v1/takedowns", json={
        "model": "conceptworld", "concept": "purple unicorn", "kind": "object",
        "legal_basis": "copyright", "claimant": CLAIMANT})
    assert unknown.json()["state"] == "rejected"  # rejecting needs no queue
    monkeypatch.undo()
    (stalled,) = client.get("/v1/takedowns?state=received").json()["items"]
    assert reconcile_once(get_settings()).admitted == []
    assert client.get(f"/v1/takedowns/{stalled['id']}").json()["state"] == "received"  # young
    with session_scope() as s:
        s.execute(update(Takedown).where(Takedown.id == stalled["id"]).values(
            created_at=utcnow() - timedelta(seconds=get_settings().lost_message_seconds + 1)))
    assert reconcile_once(get_settings()).admitted == [stalled["id"]]
    assert reconcile_once(get_settings()).admitted == []  # once
    admitted = client.get(f"/v1/takedowns/{stalled['id']}").json()
    assert admitted["state"] == "queued" and admitted["job_id"]
    assert run_unlearn_job(admitted["job_id"], get_settings()) == "completed"


def test_reconciler_requeues_expired_lease_then_crashes(client: TestClient) -> None:
    td = submit(client)
    settings = get_settings()
    for attempt in range(1, settings.max_attempts + 1):
        with session_scope() as s:
            claimed = jobs.claim(s, settings, td["job_id"], f"w{attempt}")
            assert claimed is not None
            jobs.record_progress(s, claimed, {"stage": "training", "percent": 40.0, "step": 48,
                                              "total_steps": 120, "eta_seconds": 30.0})
            job = s.get(Job, td["job_id"])
            assert job is not None
            job.lease_expires_at = utcnow() - timedelta(seconds=1)
        sweep = reconcile_once(settings)
        if attempt < settings.max_attempts:
            assert sweep.requeued == [td["job_id"]]
            back = client.get(f"/v1/takedowns/{td['id']}").json()
            assert back["state"] == "queued" and back["progress"] is None  # not the dead run's
    assert client.get(f"/v1/takedowns/{td['id']}").json()["state"] == "crashed"


def test_busy_lineage_defers_second_job(client: TestClient) -> None:
    settings = get_settings()
    a = submit(client)
    with session_scope() as s:
        assert jobs.claim(s, settings, a["job_id"], "w1") is not None
    b = submit(client, "van gogh")  # a is running, so b opens a new job
    assert b["job_id"] != a["job_id"]
    assert run_unlearn_job(b["job_id"], settings) == "busy"


def test_a_step_waiting_its_turn_is_not_sent_again_by_the_reconciler(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step waiting behind a running one re-sends its own message every 2 s; the
    reconciler took it for lost after 30 s and added a copy, and another every 30 s."""
    settings = get_settings()
    sent: list[str] = []
    monkeypatch.setattr(dispatch, "send_unlearn", lambda job_id, **_: sent.append(job_id))
    a = submit(client)
    with session_scope() as s:
        assert jobs.claim(s, settings, a["job_id"], "w1") is not None
    b = submit(client, "van gogh")

    def enqueued_long_ago(job_id: str) -> None:
        with session_scope() as s:
            row = s.get(Job, job_id)
            assert row is not None
            row.enqueued_at = utcnow() - timedelta(minutes=5)

    enqueued_long_ago(b["job_id"])  # as a solo worker busy with a leaves it
    assert b["job_id"] not in reconcile_once(settings).resent
    assert run_unlearn_job(b["job_id"], settings) == "busy" and sent[-1] == b["job_id"]
    with session_scope() as s:  # the re-send is on record
        row = s.get(Job, b["job_id"])
        assert row is not None and row.enqueued_at is not None
        assert row.enqueued_at > utcnow() - timedelta(seconds=30)
        row.enqueued_at = utcnow() - timedelta(minutes=5)
        running = s.get(Job, a["job_id"])
        assert running is not None
        running.lease_expires_at = utcnow() - timedelta(seconds=1)  # a's worker died
    swept = reconcile_once(settings)
    assert a["job_id"] in swept.requeued and b["job_id"] in swept.resent  # now it is lost


@pytest.mark.parametrize("urgent_cancelled", [False, True])
def test_a_models_most_urgent_step_runs_first(client: TestClient,
                                               monkeypatch: pytest.MonkeyPatch,
                                               urgent_cancelled: bool) -> None:
    """`priority` was stored and shown, and changed nothing: a 9 waited behind every 0. A
    step is as urgent as its most urgent takedown still queued; whichever step's message
    comes, the model's most urgent step runs, and that message is sent again."""
    settings = get_settings()
    monkeypatch.setattr(settings, "max_merge", 2)
    sent: list[str] = []
    monkeypatch.setattr(dispatch, "send_unlearn", lambda job_id, **_: sent.append(job_id))

    def filed(concept: str, priority: int) -> dict:
        r = client.post("/v1/takedowns", json={
            "model": "conceptworld", "concept": concept, "kind": "object",
            "legal_basis": "copyright", "claimant": CLAIMANT, "priority": priority})
        assert r.status_code == 202, r.text
        return r.json()

    older = [filed("red tulip", 5), filed("yellow tulip", 0)]  # as urgent as 5
    newer = [filed("van gogh tulip", 0), filed("van gogh", 9)]  # as urgent as 9
    first_job, second_job = older[0]["job_id"], newer[0]["job_id"]
    assert {t["job_id"] for t in older} == {first_job} != {t["job_id"] for t in newer}
    if urgent_cancelled:  # no longer counts: the 5 goes first
        client.post(f"/v1/takedowns/{newer[1]['id']}/cancel")
    woken, waiting = (second_job, first_job) if urgent_cancelled else (first_job, second_job)
    sent.clear()
    assert run_unlearn_job(woken, settings) == "completed"
    assert sent == [woken]  # its own turn comes after the step that ran instead
    ran = client.get(f"/v1/jobs/{waiting}").json()
    assert ran["state"] == "completed"
    assert client.get(f"/v1/jobs/{woken}").json()["state"] == "queued"
    assert run_unlearn_job(woken, settings) == "completed"
    erased_first = set(versions(client)[1]["erased"])
    expected = {"red tulip", "yellow tulip"} if urgent_cancelled else {
        "van gogh tulip", "van gogh"}
    assert erased_first == expected


def test_a_more_urgent_step_whose_worker_died_keeps_its_turn(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The urgent step's worker died; the routine step's message came first after the lease
    ran out, and ran ahead of it while the urgent one waited for the reconciler."""
    settings = get_settings()
    monkeypatch.setattr(settings, "max_merge", 1)
    monkeypatch.setattr(dispatch, "send_unlearn", lambda job_id, **_: True)
    urgent = client.post("/v1/takedowns", json={
        "model": "conceptworld", "concept": "van gogh", "kind": "style",
        "legal_basis": "copyright", "claimant": CLAIMANT, "priority": 9}).json()
    with session_scope() as s:
        assert jobs.claim(s, settings, urgent["job_id"], "w1") is not None
    routine = submit(client)
    with session_scope() as s:
        dead = s.get(Job, urgent["job_id"])
        assert dead is not None
        dead.lease_expires_at = utcnow() - timedelta(seconds=1)
    assert run_unlearn_job(routine["job_id"], settings) == "completed"
    assert versions(client)[1]["erased"] == ["van gogh"]
    assert client.get(f"/v1/jobs/{urgent['job_id']}").json()["attempt"] == 2
    assert client.get(f"/v1/jobs/{routine['job_id']}").json()["state"] == "queued"


def test_a_takedown_asked_to_stop_ends_when_its_step_goes_back_in_line(
        client: TestClient) -> None:
    """A rescinded (or cancelled) running takedown whose worker died went back in line with
    the others, was claimed again, and stopped the next merged step for everyone."""
    settings = get_settings()
    stopped, kept = submit(client), submit(client, "van gogh")
    assert stopped["job_id"] == kept["job_id"]
    with session_scope() as s:
        assert jobs.claim(s, settings, stopped["job_id"], "w1") is not None
    assert client.post(f"/v1/takedowns/{stopped['id']}/rescind",
                       json={"reason": "withdrawn"}).status_code == 200
    with session_scope() as s:
        job = s.get(Job, stopped["job_id"])
        assert job is not None
        job.lease_expires_at = utcnow() - timedelta(seconds=1)
    assert reconcile_once(settings).requeued == [stopped["job_id"]]
    assert client.get(f"/v1/takedowns/{stopped['id']}").json()["state"] == "cancelled"
    assert client.get(f"/v1/takedowns/{kept['id']}").json()["state"] == "queued"
    assert run_unlearn_job(kept["job_id"], settings) == "completed"
    assert versions(client)[-1]["erased"] == ["van gogh"]


def test_a_slow_first_engine_import_does_not_lose_the_claimed_step(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim starts the lease; the engine's first import (torch, seconds under load) must
    not let it run out, or the reconciler takes the step back from a healthy worker."""
    import sys
    import threading

    settings = get_settings()
    assert settings.lease_seconds < 6.0
    monkeypatch.setattr(settings, "engine_module", "tests.slow_import_engine")
    monkeypatch.delitem(sys.modules, "tests.slow_import_engine", raising=False)
    td = submit(client)
    sweeper = threading.Timer(settings.lease_seconds + 1.0, reconcile_once, [settings])
    sweeper.start()  # sweeps while the import still sleeps, the lease's first term over
    try:
        assert run_unlearn_job(td["job_id"], settings) == "completed"
    finally:
        sweeper.join()
    with session_scope() as s:
        job = s.get(Job, td["job_id"])
        assert job is not None and job.attempt == 1  # never taken back and run again
