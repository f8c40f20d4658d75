"""Inbound ticket integrations: each adapter maps a ticket system's webhook to a takedown.

An adapter is a name and one function `to_takedown(payload) -> TakedownCreate`; the ticket key
becomes `external_ref` and the adapter name `integration`, whose pair is unique, so the ticket
system's retries return the first takedown. Add one by registering it in `ADAPTERS`.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import ValidationError

from app.errors import InvalidInput, NotFound
from app.schemas.takedowns import TakedownCreate


class TicketAdapter(Protocol):
    name: str

    def to_takedown(self, payload: dict[str, Any]) -> TakedownCreate: ...


class JiraAdapter:
    """Jira issue webhooks (`jira:issue_created` / `jira:issue_updated`). Fields read:
    issue.key; fields.summary (the concept unless `lethe_concept` is set); optional custom
    fields `lethe_model`, `lethe_kind`, `lethe_legal_basis`, `lethe_prompts`, `lethe_legal`
    (the legal record, as `legal` on POST /v1/takedowns), `lethe_due_at`, and the claimant:
    `lethe_claimant_name` / `lethe_claimant_email` / `lethe_claimant_organisation`, else the
    reporter's displayName and emailAddress. A claimant with no email (Jira hides the
    reporter's by default) is refused, never made up: the notice must be answerable."""

    name = "jira"
    EVENTS = {"jira:issue_created", "jira:issue_updated"}

    def to_takedown(self, payload: dict[str, Any]) -> TakedownCreate:
        event = payload.get("webhookEvent")
        if not isinstance(event, str) or event not in self.EVENTS:
            raise InvalidInput(f"unsupported webhookEvent {event!r}; "
                               f"expected one of {sorted(self.EVENTS)}", field="webhookEvent")
        issue = _object(payload, "issue")
        fields = _object(issue, "fields", "issue.fields")
        reporter = _object(fields, "reporter", "issue.fields.reporter")
        email = fields.get("lethe_claimant_email") or reporter.get("emailAddress")
        if not email:
            raise InvalidInput("the claimant has no email: set the custom field "
                               "lethe_claimant_email (Jira hides the reporter's)", field="issue")
        body = {
            "model": fields.get("lethe_model") or "conceptworld",
            "concept": fields.get("lethe_concept") or fields.get("summary"),
            "kind": fields.get("lethe_kind") or "other",
            "legal_basis": fields.get("lethe_legal_basis") or "other",
            "claimant": {"name": fields.get("lethe_claimant_name") or reporter.get("displayName")
                         or "Jira reporter", "email": email,
                         "organisation": fields.get("lethe_claimant_organisation")},
            "external_ref": issue.get("key"), "integration": self.name,
            "prompts": fields.get("lethe_prompts"),
            "legal": fields.get("lethe_legal") or {},
            "due_at": fields.get("lethe_due_at"),
        }
        try:
            return TakedownCreate.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidInput(f"issue cannot be mapped: {'.'.join(map(str, first['loc']))}: "
                               f"{first['msg']}", field="issue") from exc


def _object(parent: dict[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
    """`parent[key]` where it is a JSON object, {} where absent; anything else is refused."""
    value = parent.get(key) or {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where or key} must be a JSON object, not {type(value).__name__}",
                           field="issue")
    return value


ADAPTERS: dict[str, TicketAdapter] = {a.name: a for a in (JiraAdapter(),)}


def adapter(name: str) -> TicketAdapter:
    if name not in ADAPTERS:
        raise NotFound(f"no ticket integration {name!r}; known: {sorted(ADAPTERS)}")
    return ADAPTERS[name]
