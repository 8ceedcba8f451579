"""Capability tokens that renew themselves before they expire."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Optional, Sequence

from .models import IssuedToken


class _Source:
    """What both sources keep: the agent, the lifetime asked for, the token in force and when
    to renew it."""

    def __init__(self, client: Any, agent_id: str, *, ttl: Optional[int] = None, policy_ids: Optional[Sequence[str]] = None, refresh_before: Optional[float] = None, clock: Any = time.monotonic) -> None:
        if refresh_before is not None and refresh_before <= 0:
            raise ValueError("refresh_before must be more than 0 seconds (renewing at expiry hands out expired tokens)")
        self._client = client
        self.agent_id = agent_id
        self._ttl = ttl
        self._policy_ids = policy_ids
        self._refresh_before = refresh_before
        self._clock = clock
        self._current: Optional[IssuedToken] = None
        self._renew_at = 0.0
        self._expires_wall = 0.0
        self._margin = 0.0
        #: How many tokens this source has issued.
        self.issued = 0

    def __repr__(self) -> str:
        return f"actgate.{type(self).__name__}(agent_id={self.agent_id!r})"

    def _due(self) -> bool:
        # The monotonic clock stops while a machine sleeps: the wall clock against the token's
        # own expiry catches that.
        return (
            self._current is None
            or self._clock() >= self._renew_at
            or time.time() >= self._expires_wall - self._margin
        )

    def invalidate(self) -> None:
        """Forget the token in force (after revoking it): the next call issues a new one."""
        self._current = None

    def _keep(self, t: IssuedToken) -> IssuedToken:
        self.issued += 1
        self._current = t
        margin = self._refresh_before if self._refresh_before is not None else max(5.0, t.expires_in / 5)
        self._margin = margin
        self._renew_at = self._clock() + max(0.0, t.expires_in - margin)
        self._expires_wall = time.time() + t.expires_in
        return t


class TokenSource(_Source):
    """Issues a token for one agent and hands it out until it nears expiry, then issues the
    next one. Safe from many threads at once (one issue at a time; the others wait for it and
    share its token); for asyncio use :class:`AsyncTokenSource`.

    ``refresh_before`` (seconds): renew when less than this is left (default: a fifth of the
    lifetime, at least 5 s).
    """

    def __init__(self, client: Any, agent_id: str, **options: Any) -> None:
        super().__init__(client, agent_id, **options)
        self._lock = threading.Lock()

    def current(self) -> IssuedToken:
        """The token in force (issuing a new one when due)."""
        with self._lock:
            if self._due():
                return self._keep(self._client.issue_token(self.agent_id, expires_in=self._ttl, policy_ids=self._policy_ids))
            assert self._current is not None
            return self._current

    def token(self) -> str:
        """The token string, for ``Authorization: Bearer`` or ``validate``."""
        return self.current().token

    def __call__(self) -> str:
        return self.token()


class AsyncTokenSource(_Source):
    """:class:`TokenSource` for asyncio: ``await source.token()``; concurrent tasks share one
    issue."""

    def __init__(self, client: Any, agent_id: str, **options: Any) -> None:
        super().__init__(client, agent_id, **options)
        self._lock: Optional[asyncio.Lock] = None

    async def current(self) -> IssuedToken:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._due():
                return self._keep(await self._client.issue_token(self.agent_id, expires_in=self._ttl, policy_ids=self._policy_ids))
            assert self._current is not None
            return self._current

    async def token(self) -> str:
        return (await self.current()).token
