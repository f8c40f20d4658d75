"""Domain errors: each carries the HTTP status and a message a user can act on.

Services raise these; `app.api.problems` renders them as application/problem+json.
"""

from __future__ import annotations


class DomainError(Exception):
    status: int = 400
    title: str = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class InvalidInput(DomainError):
    status = 422
    title = "Invalid input"


class CatalogUnavailable(Conflict):
    title = "Concept catalog unavailable"


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class Gone(DomainError):
    status = 410
    title = "Gone"


class Quarantined(DomainError):
    status = 451
    title = "Unavailable for legal reasons"


class IdempotencyConflict(DomainError):
    status = 409
    title = "Request in flight"
