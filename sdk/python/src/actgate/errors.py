"""Typed errors. Every message says what to fix; none contains a token or an API key."""

from __future__ import annotations

from typing import Any, Optional


class ActgateError(Exception):
    """An actgate call failed. ``status`` is the HTTP status (0: no answer), ``code`` the
    machine-readable ``error`` of the body, ``problems`` the per-field problems of a 400."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "",
        problems: Optional[list[dict[str, str]]] = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.problems = problems or []
        self.body = body


class ConnectionFailed(ActgateError):
    """actgate could not be reached (not running, wrong URL, network)."""


class InvalidRequest(ActgateError):
    """400: the request was malformed; ``problems`` names each field and how to fix it."""


class AuthenticationError(ActgateError):
    """401: the API key is missing or unknown."""


class PermissionDenied(ActgateError):
    """403 from the REST API: the API key's role may not make this call (the message names
    the role it needs)."""


class NotFound(ActgateError):
    """404: nothing with that id in this tenant."""


class Conflict(ActgateError):
    """409: a name or id is taken, or the object cannot change."""


class StoreUnavailable(ActgateError):
    """503: actgate's store cannot be reached; retry shortly."""


class ServerError(ActgateError):
    """Any other answer actgate did not mean to give (5xx)."""


class Denied(ActgateError):
    """Raised by ``require`` and guarded functions: actgate denied the call. ``decision``
    is the full :class:`actgate.Decision` (reason, message, policy)."""

    def __init__(self, decision: Any) -> None:
        super().__init__(
            f"denied by actgate ({decision.reason}): {decision.message}",
            status=403,
            code=decision.reason,
        )
        self.decision = decision
        self.reason: str = decision.reason


class ObligationUnmet(ActgateError):
    """Allowed, but the allowing policy has a constraint the call sent no facts for (rows,
    recipients): the guarded function does not run. The message says which context to pass."""


_BY_STATUS = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    503: StoreUnavailable,
}


def from_response(status: int, body: Any, what: str) -> ActgateError:
    """The error of an answer with a non-2xx ``status``."""
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("error") or f"HTTP {status}")
        code = str(body.get("error") or "")
        problems = body.get("problems") if isinstance(body.get("problems"), list) else None
    else:
        message, code, problems = f"HTTP {status}", "", None
    if problems:
        message += ": " + "; ".join(f"{p.get('path')}: {p.get('message')}" for p in problems)
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ActgateError)
    return cls(f"{what}: {message}", status=status, code=code, problems=problems, body=body)
