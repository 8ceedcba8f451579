"""actgate: fine-grained, revocable, audited permissions for AI agents.

    import actgate

    client = actgate.Client("http://127.0.0.1:8081", api_key=os.environ["ACTGATE_API_KEY"])
    tokens = actgate.TokenSource(client, agent_id)           # issues and renews the agent's token
    decision = client.validate(tokens.token(), "read", "api://crm/customers/42")
    if not decision.allowed:
        print(decision.reason, decision.message)

See ``actgate.agents`` for OpenAI Agents SDK tools, :func:`guard` for any function.
"""

from .client import AsyncClient, Client
from .errors import (
    ActgateError,
    AuthenticationError,
    Conflict,
    ConnectionFailed,
    Denied,
    InvalidRequest,
    NotFound,
    ObligationUnmet,
    PermissionDenied,
    ServerError,
    StoreUnavailable,
)
from .guard import BearerAuth, fill, guard
from .models import Decision, IssuedToken
from .tokens import AsyncTokenSource, TokenSource

__version__ = "0.1.0"

__all__ = [
    "ActgateError",
    "AsyncClient",
    "AsyncTokenSource",
    "AuthenticationError",
    "BearerAuth",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Decision",
    "Denied",
    "InvalidRequest",
    "IssuedToken",
    "NotFound",
    "ObligationUnmet",
    "PermissionDenied",
    "ServerError",
    "StoreUnavailable",
    "TokenSource",
    "fill",
    "guard",
    "validate_with_act",
]


def validate_with_act(client: Client, token: str, action: str, resource: str, context: "dict | None" = None) -> bool:
    """The ACT guide's ``validateWithACT(token, action, resource)`` as a one-liner: True when
    allowed. Prefer :meth:`Client.validate` to see why a call was denied."""
    return client.validate(token, action, resource, context).allowed
