"""The REST API client, sync (:class:`Client`) and async (:class:`AsyncClient`).

Each method is described once (a request and how to read its answer); the two classes only
differ in how they send it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Optional, Sequence

import httpx

from . import errors
from .models import Decision, IssuedToken

DEFAULT_TIMEOUT = 10.0


@dataclass
class _Req:
    method: str
    path: str
    what: str
    json: Any = None
    params: Optional[dict[str, Any]] = None
    parse: Callable[[Any], Any] = lambda body: body


def _clean(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _key(api_key: Optional[str]) -> str:
    key = api_key if api_key is not None else os.environ.get("ACTGATE_API_KEY")
    if not key:
        raise ValueError(
            "no API key: pass api_key=... or set ACTGATE_API_KEY (an issuer key for a tool-runner, "
            "an admin key for setup)"
        )
    return key


class _Api:
    """The requests; subclasses send them."""

    # agents ---------------------------------------------------------------------------------
    def _create_agent(self, name: str, description: Optional[str], metadata: Optional[Mapping[str, Any]], id: Optional[str]) -> _Req:
        body = _clean({"name": name, "description": description, "metadata": dict(metadata) if metadata else None, "id": id})
        return _Req("POST", "/v1/agents", "create agent", json=body)

    def _get_agent(self, agent_id: str) -> _Req:
        return _Req("GET", f"/v1/agents/{_seg(agent_id)}", f"get agent {agent_id}")

    def _list_agents(self) -> _Req:
        return _Req("GET", "/v1/agents", "list agents", parse=lambda b: b["agents"])

    def _revoke_agent(self, agent_id: str) -> _Req:
        return _Req("DELETE", f"/v1/agents/{_seg(agent_id)}", f"revoke agent {agent_id}")

    # policies -------------------------------------------------------------------------------
    def _create_policy(self, policy: Mapping[str, Any]) -> _Req:
        return _Req("POST", "/v1/policies", "create policy", json=dict(policy))

    def _get_policy(self, policy_id: str) -> _Req:
        return _Req("GET", f"/v1/policies/{_seg(policy_id)}", f"get policy {policy_id}")

    def _list_policies(self) -> _Req:
        return _Req("GET", "/v1/policies", "list policies", parse=lambda b: b["policies"])

    def _update_policy(self, policy_id: str, policy: Mapping[str, Any]) -> _Req:
        return _Req("PUT", f"/v1/policies/{_seg(policy_id)}", f"update policy {policy_id}", json=dict(policy))

    def _delete_policy(self, policy_id: str) -> _Req:
        return _Req("DELETE", f"/v1/policies/{_seg(policy_id)}", f"delete policy {policy_id}")

    # tokens ---------------------------------------------------------------------------------
    def _issue_token(self, agent_id: str, expires_in: Optional[int], policy_ids: Optional[Sequence[str]]) -> _Req:
        body = _clean({"agentId": agent_id, "expiresIn": expires_in, "policyIds": list(policy_ids) if policy_ids else None})
        return _Req("POST", "/v1/tokens", f"issue a token for {agent_id}", json=body, parse=IssuedToken.from_json)

    def _revoke_token(self, token_id: str) -> _Req:
        return _Req("DELETE", f"/v1/tokens/{_seg(token_id)}", f"revoke token {token_id}")

    # decisions ------------------------------------------------------------------------------
    def _validate(self, token: Optional[str], action: str, resource: str, context: Optional[Mapping[str, Any]], request_id: Optional[str]) -> _Req:
        if not action or not resource:
            raise ValueError("validate needs an action (e.g. 'read') and a resource (e.g. 'api://crm/customers/42')")
        body = _clean({
            "capabilityToken": token,
            "action": action,
            "resourceId": resource,
            "context": dict(context) if context else None,
            "requestId": request_id,
        })
        return _Req("POST", "/v1/enforce", f"validate {action} on {resource}", json=body, parse=Decision.from_json)

    def _audit_page(self, filters: dict[str, Any], cursor: Optional[str]) -> _Req:
        params = _clean({**filters, "cursor": cursor})
        return _Req("GET", "/v1/audit", "read the audit trail", params=params)


def _seg(s: str) -> str:
    """An id as one path segment (ids never hold a `/`; refuse rather than reach elsewhere)."""
    if not s or "/" in s or "?" in s or "#" in s:
        raise ValueError(f"not an id: {s!r}")
    return s


def _audit_filters(agent_id: Optional[str], decision: Optional[str], action: Optional[str], resource: Optional[str], since: Optional[str], until: Optional[str], page_size: int) -> dict[str, Any]:
    if decision not in (None, "allowed", "denied"):
        raise ValueError("decision must be 'allowed' or 'denied'")
    if not 1 <= page_size <= 1000:
        raise ValueError("page_size must be 1 to 1000")
    return _clean({"agentId": agent_id, "decision": decision, "action": action, "resource": resource, "since": since, "until": until, "limit": page_size})


def _read(response: httpx.Response, req: _Req) -> Any:
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    if response.status_code >= 400:
        raise errors.from_response(response.status_code, body, req.what)
    if not 200 <= response.status_code < 300 or not isinstance(body, dict):
        raise errors.ActgateError(
            f"{req.what}: {response.url} answered HTTP {response.status_code} without the API's JSON: is this actgate's REST API address (not its proxy or admin port)?",
            status=response.status_code,
        )
    return req.parse(body)


def _read_decision(response: httpx.Response, req: _Req) -> Decision:
    # /v1/enforce answers 503 with a decision body when actgate cannot decide (its store
    # unreachable past store.maxStaleness): a denial, not an exception.
    if response.status_code == 503:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("decision") == "denied":
            return Decision.from_json(body)
    return _read(response, req)


class Client(_Api):
    """A synchronous client of actgate's REST API.

    >>> client = Client("http://127.0.0.1:8081", api_key=os.environ["ACTGATE_API_KEY"])
    >>> decision = client.validate(token, "read", "api://crm/customers/42")
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8081", api_key: Optional[str] = None, *, timeout: float = DEFAULT_TIMEOUT, http: Optional[httpx.Client] = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.Client(timeout=timeout)
        self._headers = {"X-Api-Key": _key(api_key)}

    def __repr__(self) -> str:
        return f"actgate.Client({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, req: _Req, read: Callable[[httpx.Response, _Req], Any] = _read) -> Any:
        try:
            r = self._http.request(req.method, self.base_url + req.path, json=req.json, params=req.params, headers=self._headers)
        except httpx.HTTPError as e:
            raise errors.ConnectionFailed(f"{req.what}: cannot reach actgate at {self.base_url} ({type(e).__name__}: {e}); is it running, and is this its API address (e.g. http://127.0.0.1:8081)?") from None
        return read(r, req)

    def create_agent(self, name: str, *, description: Optional[str] = None, metadata: Optional[Mapping[str, Any]] = None, id: Optional[str] = None) -> dict[str, Any]:
        """Registers an agent (``metadata`` e.g. ``{"openai_assistant_id": ...}``)."""
        return self._send(self._create_agent(name, description, metadata, id))

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        return self._send(self._get_agent(agent_id))

    def list_agents(self) -> list[dict[str, Any]]:
        return self._send(self._list_agents())

    def revoke_agent(self, agent_id: str) -> dict[str, Any]:
        """Revokes an agent: every token it holds is denied from now on."""
        return self._send(self._revoke_agent(agent_id))

    def create_policy(self, policy: Mapping[str, Any]) -> dict[str, Any]:
        """Creates a policy: ``{"name", "actions", "resources", "effect", "constraints"?, "agents"?}``."""
        return self._send(self._create_policy(policy))

    def get_policy(self, policy_id: str) -> dict[str, Any]:
        return self._send(self._get_policy(policy_id))

    def list_policies(self) -> list[dict[str, Any]]:
        return self._send(self._list_policies())

    def update_policy(self, policy_id: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        return self._send(self._update_policy(policy_id, policy))

    def delete_policy(self, policy_id: str) -> dict[str, Any]:
        return self._send(self._delete_policy(policy_id))

    def issue_token(self, agent_id: str, *, expires_in: Optional[int] = None, policy_ids: Optional[Sequence[str]] = None) -> IssuedToken:
        """Issues a capability token for an agent (``expires_in`` seconds, at most the
        gateway's ``tokens.maxTtl``)."""
        return self._send(self._issue_token(agent_id, expires_in, policy_ids))

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return self._send(self._revoke_token(token_id))

    def validate(self, token: Optional[str], action: str, resource: str, context: Optional[Mapping[str, Any]] = None, *, request_id: Optional[str] = None) -> Decision:
        """Asks actgate whether ``token`` may do ``action`` on ``resource``. A denial is a
        :class:`Decision` with ``allowed=False``, not an exception."""
        return self._send(self._validate(token, action, resource, context, request_id), _read_decision)

    def require(self, token: Optional[str], action: str, resource: str, context: Optional[Mapping[str, Any]] = None) -> Decision:
        """Like :meth:`validate`, but raises :class:`actgate.Denied` unless allowed."""
        decision = self.validate(token, action, resource, context)
        if not decision.allowed:
            raise errors.Denied(decision)
        return decision

    def audit(self, *, agent_id: Optional[str] = None, decision: Optional[str] = None, action: Optional[str] = None, resource: Optional[str] = None, since: Optional[str] = None, until: Optional[str] = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """The tenant's audit events, newest first, fetched a page at a time as you iterate."""
        filters = _audit_filters(agent_id, decision, action, resource, since, until, page_size)
        cursor: Optional[str] = None
        while True:
            page = self._send(self._audit_page(filters, cursor))
            yield from page["events"]
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def guard(self, action: str, resource: str, token: Any, *, context: Optional[Callable[..., Mapping[str, Any]]] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A decorator: see :func:`actgate.guard`."""
        from .guard import guard

        return guard(self, action, resource, token, context=context)

    def proxy_client(self, proxy_url: str, token: Any, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` for actgate's proxy that sends ``token`` (a string, a
        :class:`actgate.TokenSource` or a callable) as ``Authorization: Bearer``."""
        from .guard import BearerAuth

        return httpx.Client(base_url=proxy_url, auth=BearerAuth(token, proxy_url), **kwargs)


class AsyncClient(_Api):
    """The same as :class:`Client`, for asyncio (``await client.validate(...)``)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8081", api_key: Optional[str] = None, *, timeout: float = DEFAULT_TIMEOUT, http: Optional[httpx.AsyncClient] = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._headers = {"X-Api-Key": _key(api_key)}

    def __repr__(self) -> str:
        return f"actgate.AsyncClient({self.base_url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _send(self, req: _Req, read: Callable[[httpx.Response, _Req], Any] = _read) -> Any:
        try:
            r = await self._http.request(req.method, self.base_url + req.path, json=req.json, params=req.params, headers=self._headers)
        except httpx.HTTPError as e:
            raise errors.ConnectionFailed(f"{req.what}: cannot reach actgate at {self.base_url} ({type(e).__name__}: {e}); is it running, and is this its API address (e.g. http://127.0.0.1:8081)?") from None
        return read(r, req)

    async def create_agent(self, name: str, *, description: Optional[str] = None, metadata: Optional[Mapping[str, Any]] = None, id: Optional[str] = None) -> dict[str, Any]:
        return await self._send(self._create_agent(name, description, metadata, id))

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        return await self._send(self._get_agent(agent_id))

    async def list_agents(self) -> list[dict[str, Any]]:
        return await self._send(self._list_agents())

    async def revoke_agent(self, agent_id: str) -> dict[str, Any]:
        return await self._send(self._revoke_agent(agent_id))

    async def create_policy(self, policy: Mapping[str, Any]) -> dict[str, Any]:
        return await self._send(self._create_policy(policy))

    async def get_policy(self, policy_id: str) -> dict[str, Any]:
        return await self._send(self._get_policy(policy_id))

    async def list_policies(self) -> list[dict[str, Any]]:
        return await self._send(self._list_policies())

    async def update_policy(self, policy_id: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        return await self._send(self._update_policy(policy_id, policy))

    async def delete_policy(self, policy_id: str) -> dict[str, Any]:
        return await self._send(self._delete_policy(policy_id))

    async def issue_token(self, agent_id: str, *, expires_in: Optional[int] = None, policy_ids: Optional[Sequence[str]] = None) -> IssuedToken:
        return await self._send(self._issue_token(agent_id, expires_in, policy_ids))

    async def revoke_token(self, token_id: str) -> dict[str, Any]:
        return await self._send(self._revoke_token(token_id))

    async def validate(self, token: Optional[str], action: str, resource: str, context: Optional[Mapping[str, Any]] = None, *, request_id: Optional[str] = None) -> Decision:
        return await self._send(self._validate(token, action, resource, context, request_id), _read_decision)

    async def require(self, token: Optional[str], action: str, resource: str, context: Optional[Mapping[str, Any]] = None) -> Decision:
        decision = await self.validate(token, action, resource, context)
        if not decision.allowed:
            raise errors.Denied(decision)
        return decision

    async def audit(self, *, agent_id: Optional[str] = None, decision: Optional[str] = None, action: Optional[str] = None, resource: Optional[str] = None, since: Optional[str] = None, until: Optional[str] = None, page_size: int = 100) -> AsyncIterator[dict[str, Any]]:
        filters = _audit_filters(agent_id, decision, action, resource, since, until, page_size)
        cursor: Optional[str] = None
        while True:
            page = await self._send(self._audit_page(filters, cursor))
            for event in page["events"]:
                yield event
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def guard(self, action: str, resource: str, token: Any, *, context: Optional[Callable[..., Mapping[str, Any]]] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        from .guard import guard

        return guard(self, action, resource, token, context=context)

    def proxy_client(self, proxy_url: str, token: Any, **kwargs: Any) -> httpx.AsyncClient:
        from .guard import BearerAuth

        return httpx.AsyncClient(base_url=proxy_url, auth=BearerAuth(token, proxy_url), **kwargs)
