"""Guarding a tool function: ask actgate before it runs, with the resource filled from the
function's own arguments."""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any, Callable, Mapping, Optional

import httpx

from .errors import Denied

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FORBIDDEN = set("/*?[]{}\\")


def fill(template: str, arguments: Mapping[str, Any]) -> str:
    """``template`` with each ``{name}`` replaced by the argument of that name, as data: a
    string that could widen the resource (``/``, ``*``, ``?``, brackets, braces, a
    backslash, a control character) or is empty is refused, like actgate's own path
    parameters. Integers are written in decimal; anything else is refused.

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
        if not s or any(c in _FORBIDDEN or ord(c) < 0x20 or ord(c) == 0x7F for c in s):
            raise ValueError(f"argument {name!r} = {s!r} cannot be part of a resource (empty, or it holds / * ? [ ] {{ }} \\ or a control character)")
        return s

    return _PLACEHOLDER.sub(one, template)


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
            return fn(*args, **kwargs)

        return wrapper

    return decorate


class BearerAuth(httpx.Auth):
    """Sends the current token as ``Authorization: Bearer`` on every request (for actgate's
    proxy); the token is read per request, so a :class:`TokenSource` renews it in time."""

    def __init__(self, token: Any) -> None:
        self._token = _token_of(token)

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        tok = self._token()
        if inspect.isawaitable(tok):
            raise TypeError("an AsyncTokenSource needs an async client (AsyncClient.proxy_client)")
        request.headers["Authorization"] = f"Bearer {tok}"
        yield request

    async def async_auth_flow(self, request: httpx.Request) -> Any:
        tok = self._token()
        if inspect.isawaitable(tok):
            tok = await tok
        request.headers["Authorization"] = f"Bearer {tok}"
        yield request
