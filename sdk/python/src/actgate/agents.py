"""OpenAI Agents SDK integration: function tools that ask actgate before they run.

    from actgate.agents import guarded_tool

    @guarded_tool(client, action="send_email", resource="api://email/outbound",
                  context=lambda to, **_: {"to": [to]})
    async def send_email(to: str, subject: str, body: str) -> str:
        '''Send an e-mail.'''
        ...

    agent = Agent(name="support", tools=[send_email], ...)
    await Runner.run(agent, "...", context=RunToken(token))   # the token per run

A denied call does not crash the run: the model receives the denial (reason and message) as
the tool's output, and the function does not run. Anything else that keeps actgate from
deciding (unreachable, a bad API key, no token, an argument that cannot fill the resource, an
allowing policy's maxRows/allowedDomains with no rows/recipients in ``context``) raises inside
the tool: the function does not run (fail closed), and the Agents SDK handles the exception as
it does any tool's (by default its ``failure_error_function`` tells the model the tool failed;
pass ``failure_error_function=None`` to make the run raise).

The token comes from ``token=`` (a string, a :class:`actgate.TokenSource` or
:class:`actgate.AsyncTokenSource`, or a callable taking the run's ``RunContextWrapper``), or,
by default, from the run's context: ``context.token`` or ``context["token"]``. It is never
part of the tool's schema, so the model never sees it.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Mapping, Optional

from .errors import Denied, ObligationUnmet
from .guard import fill, unmet_obligation

try:  # optional dependency: pip install 'actgate[agents]'
    from agents import RunContextWrapper, function_tool
except ImportError as e:  # pragma: no cover
    raise ImportError("actgate.agents needs the OpenAI Agents SDK: pip install 'actgate[agents]' (openai-agents)") from e


def _run_token(ctx: Any) -> str:
    c = getattr(ctx, "context", None)
    tok = getattr(c, "token", None)
    if tok is None and isinstance(c, Mapping):
        tok = c.get("token")
    if not isinstance(tok, str) or not tok:
        raise ValueError(
            "no capability token for this run: pass token= to guarded_tool, or run the agent with "
            "context= an object with a .token attribute (or a dict with 'token')"
        )
    return tok


def denial_text(decision: Any, tool: str) -> str:
    """What the model reads when actgate denies a call."""
    hint = {
        "constraint_violated": "Change the arguments to stay within the constraint.",
        "explicit_deny": "This is forbidden by policy; do not retry it.",
    }.get(decision.reason, "Do not retry it with other wording.")
    policy = f" Policy: {decision.policy_id}." if decision.policy_id else ""
    return f"The call to {tool} was denied by actgate ({decision.reason}): {decision.message}.{policy} {hint}"


def guarded_tool(client: Any, *, action: str, resource: str, token: Any = None, context: Optional[Callable[..., Mapping[str, Any]]] = None, **tool_options: Any) -> Callable[[Callable[..., Any]], Any]:
    """A decorator making ``fn`` an Agents SDK ``FunctionTool`` (``function_tool(**tool_options)``)
    that validates every call with actgate first: ``action`` on ``resource`` (a template filled
    from the call's arguments, as data), with ``context(**arguments)`` as the facts for
    constraints. ``client`` is an :class:`actgate.Client` or :class:`actgate.AsyncClient`."""

    def decorate(fn: Callable[..., Any]) -> Any:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        name = tool_options.get("name_override") or fn.__name__

        async def get_token(ctx: Any) -> str:
            if token is None:
                return _run_token(ctx)
            t = token
            if isinstance(t, str):
                return t
            if hasattr(t, "token") and callable(t.token):
                t = t.token()
            elif callable(t):
                t = t(ctx)
            if inspect.isawaitable(t):
                t = await t
            return t

        async def tool(ctx: Any, *args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            res = fill(resource, values)
            facts = context(**values) if context else None
            decision = client.validate(await get_token(ctx), action, res, facts)
            if inspect.isawaitable(decision):
                decision = await decision
            if not decision.allowed:
                return denial_text(decision, name)
            missing = unmet_obligation(decision, facts)
            if missing:
                raise ObligationUnmet(f"{name}: {missing}")
            out = fn(*args, **kwargs)
            if inspect.isawaitable(out):
                out = await out
            return out

        ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=RunContextWrapper[Any])
        tool.__signature__ = sig.replace(parameters=[ctx_param, *sig.parameters.values()])  # type: ignore[attr-defined]
        tool.__annotations__ = {"ctx": RunContextWrapper[Any], **hints}
        tool.__name__ = fn.__name__
        tool.__qualname__ = fn.__qualname__
        tool.__doc__ = fn.__doc__
        tool.__module__ = fn.__module__
        return function_tool(tool, **tool_options)

    return decorate


__all__ = ["guarded_tool", "denial_text", "Denied"]
