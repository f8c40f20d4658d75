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
    fields `lethe_model`, `lethe_kind`, `lethe_legal_basis`, `lethe_prompts`; the reporter's
    displayName and emailAddress as the claimant."""

    name = "jira"
    EVENTS = {"jira:issue_created", "jira:issue_updated"}

    def to_takedown(self, payload: dict[str, Any]) -> TakedownCreate:
        if payload.get("webhookEvent") not in self.EVENTS:
            raise InvalidInput(f"unsupported webhookEvent {payload.get('webhookEvent')!r}; "
                               f"expected one of {sorted(self.EVENTS)}", field="webhookEvent")
        issue = payload.get("issue") or {}
        fields = issue.get("fields") or {}
        reporter = fields.get("reporter") or {}
        body = {
            "model": fields.get("lethe_model") or "conceptworld",
            "concept": fields.get("lethe_concept") or fields.get("summary"),
            "kind": fields.get("lethe_kind") or "other",
            "legal_basis": fields.get("lethe_legal_basis") or "other",
            "claimant": {"name": reporter.get("displayName") or "Jira reporter",
                         "email": reporter.get("emailAddress") or "unknown@invalid.example"},
            "external_ref": issue.get("key"), "integration": self.name,
            "prompts": fields.get("lethe_prompts"),
        }
        try:
            return TakedownCreate.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidInput(f"issue cannot be mapped: {'.'.join(map(str, first['loc']))}: "
                               f"{first['msg']}", field="issue") from exc


ADAPTERS: dict[str, TicketAdapter] = {a.name: a for a in (JiraAdapter(),)}


def adapter(name: str) -> TicketAdapter:
    if name not in ADAPTERS:
        raise NotFound(f"no ticket integration {name!r}; known: {sorted(ADAPTERS)}")
    return ADAPTERS[name]
