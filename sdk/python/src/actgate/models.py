"""What actgate answers, as small typed objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Decision:
    """The answer of ``POST /v1/enforce``.

    ``constraints`` are the deciding policy's constraints (``maxRows``, ``allowedDomains``,
    ``readOnly``): the obligations the caller must still honour when it did not send the facts
    (e.g. cap the rows it returns at ``maxRows``)."""

    allowed: bool
    reason: str
    message: str
    policy_id: Optional[str] = None
    constraints: dict[str, Any] = field(default_factory=dict)
    audit_id: Optional[str] = None
    request_id: Optional[str] = None

    @property
    def decision(self) -> str:
        """``allowed`` or ``denied``."""
        return "allowed" if self.allowed else "denied"

    @property
    def obligations(self) -> dict[str, Any]:
        """The same as ``constraints``."""
        return self.constraints

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "Decision":
        return cls(
            allowed=body.get("decision") == "allowed",
            reason=str(body.get("reason", "")),
            message=str(body.get("message", "")),
            policy_id=body.get("policyId"),
            constraints=dict(body.get("constraints") or {}),
            audit_id=body.get("auditId"),
            request_id=body.get("requestId"),
        )


@dataclass(frozen=True)
class IssuedToken:
    """A capability token just issued (``POST /v1/tokens``). ``repr`` hides the token."""

    token: str = field(repr=False)
    token_id: str
    agent_id: str
    tenant_id: str
    expires_at: str
    expires_in: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "IssuedToken":
        return cls(
            token=body["token"],
            token_id=body["tokenId"],
            agent_id=body["agentId"],
            tenant_id=body.get("tenantId", ""),
            expires_at=body.get("expiresAt", ""),
            expires_in=int(body.get("expiresIn", 0)),
        )
