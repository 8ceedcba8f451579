"""Guarding a tool function: ask actgate before it runs, with the resource filled from the
function's own arguments."""

from __future__ import annotations

import functools
import inspect
import re
import unicodedata
from typing import Any, Callable, Mapping, Optional

import httpx

from .errors import Denied, ObligationUnmet

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FORBIDDEN = set("/%*?[]{}\\")


def fill(template: str, arguments: Mapping[str, Any]) -> str:
    """``template`` with each ``{name}`` replaced by the argument of that name, as data: a
    string that could widen the resource or change where a request goes (``/``, ``%``,
    ``*``, ``?``, brackets, braces, a backslash, any control character, ``.`` or ``..``) or
    is empty is refused, exactly as actgate refuses such path parameters. Integers are
    written in decimal; anything else is refused.

    >>> fill("api://crm/customers/{customer_id}", {"customer_id": 42})
    'api://crm/customers/42'
    """

    def one(m: "re.Match[str]") -> str:
        name = m.group(1)
        if name not in arguments:
            raise ValueError(f"resource template {template!r} names {{{name}}}, but the function has no argument {name!r}")
        v = arguments[name]
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise ValueError(f"argument {name!r} fills the resource and must be a string or an integer, not {type(v).__name__}")
        s = str(v)
        if not s or s in (".", "..") or any(c in _FORBIDDEN or unicodedata.category(c) == "Cc" for c in s):
            raise ValueError(f"argument {name!r} = {s!r} cannot be part of a resource (empty, . or .., or it holds / % * ? [ ] {{ }} \\ or a control character)")
        return s

    return _PLACEHOLDER.sub(one, template)


_ROW_KEYS = ("rows", "limit")
_RECIPIENT_KEYS = ("recipients", "to", "cc", "bcc")


def unmet_obligation(decision: Any, context: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Why an allowed decision cannot be acted on: its policy has ``maxRows`` or
    ``allowedDomains`` but the call sent no rows or no recipients, so actgate could not check
    them (they came back as obligations). ``None`` when nothing is missing."""
    ctx = context or {}
    c = decision.constraints or {}
    if "maxRows" in c and not any(k in ctx for k in _ROW_KEYS):
        return (
            f"the allowing policy limits rows (maxRows {c['maxRows']}) but the call sent no rows: pass "
            "context with 'rows' (or 'limit') so actgate checks it"
        )
    if "allowedDomains" in c and not any(k in ctx for k in _RECIPIENT_KEYS):
        return (
            "the allowing policy limits recipients (allowedDomains) but the call sent none: pass "
            "context with 'to' (and 'cc', 'bcc') so actgate checks them"
        )
    return None


def _token_of(token: Any) -> Any:
    """A token string, or what to call (maybe awaitable) to get one."""
    if isinstance(token, str):
        return lambda: token
    if hasattr(token, "token") and callable(token.token):
        return token.token
    if callable(token):
        return token
    raise TypeError("token must be a string, a TokenSource / AsyncTokenSource, or a callable returning the token")


def guard(client: Any, action: str, resource: str, token: Any, *, context: Optional[Callable[..., Mapping[str, Any]]] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that validates each call with actgate before running the function, and
    raises :class:`actgate.Denied` instead when denied.

    ``resource`` is a template filled from the call's arguments (see :func:`fill`);
    ``context`` (optional) maps the call's arguments to the facts actgate checks constraints
    on, e.g. ``lambda to, **_: {"to": to}``. Works on plain and ``async`` functions; with an
    :class:`actgate.AsyncClient` the function must be ``async``. The wrapper keeps the
    function's name, docstring and signature (so tool frameworks see the same schema).
    """
    get_token = _token_of(token)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)

        def facts(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Optional[Mapping[str, Any]]]:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            return fill(resource, values), (context(**values) if context else None)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                res, ctx = facts(args, kwargs)
                tok = get_token()
                if inspect.isawaitable(tok):
                    tok = await tok
                decision = client.validate(tok, action, res, ctx)
                if inspect.isawaitable(decision):
                    decision = await decision
                if not decision.allowed:
                    raise Denied(decision)
                missing = unmet_obligation(decision, ctx)
                if missing:
                    raise ObligationUnmet(missing)
                return await fn(*args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            res, ctx = facts(args, kwargs)
            decision = client.validate(get_token(), action, res, ctx)
            if inspect.isawaitable(decision):
                decision.close()
                raise TypeError("an AsyncClient guards async functions only; make the function async or use Client")
            if not decision.allowed:
                raise Denied(decision)
            missing = unmet_obligation(decision, ctx)
            if missing:
                raise ObligationUnmet(missing)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


class BearerAuth(httpx.Auth):
    """Sends the current token as ``Authorization: Bearer`` on requests to actgate's proxy
    (``origin``: its scheme, host and port) and refuses any other origin, so a URL from a model
    never carries the token elsewhere; the token is read per request, so a
    :class:`TokenSource` renews it in time."""

    def __init__(self, token: Any, origin: Optional[str] = None) -> None:
        self._token = _token_of(token)
        self._origin = httpx.URL(origin) if origin else None

    def _check(self, request: httpx.Request) -> None:
        o = self._origin
        u = request.url
        if o is not None and (u.scheme, u.host, u.port) != (o.scheme, o.host, o.port):
            raise ValueError(f"refused: {u.scheme}://{u.host} is not actgate's proxy ({o.scheme}://{o.host}); the token goes to the proxy only")

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        self._check(request)
        tok = self._token()
        if inspect.isawaitable(tok):
            raise TypeError("an AsyncTokenSource needs an async client (AsyncClient.proxy_client)")
        request.headers["Authorization"] = f"Bearer {tok}"
        yield request

    async def async_auth_flow(self, request: httpx.Request) -> Any:
        self._check(request)
        tok = self._token()
        if inspect.isawaitable(tok):
            tok = await tok
        request.headers["Authorization"] = f"Bearer {tok}"
        yield request
