"""The Python client against the real actgate binary (no mocks of actgate)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

import actgate
from conftest import ADMIN_KEY, ISSUER_KEY, Upstream


@pytest.fixture
def admin(gateway):
    with actgate.Client(gateway.api, api_key=ADMIN_KEY) as c:
        yield c


@pytest.fixture
def setup(admin):
    """An agent and a policy: read customers (maxRows 100), never delete."""
    agent = admin.create_agent("Customer Support Assistant", metadata={"openai_assistant_id": "asst_abc123"})
    suffix = agent["id"][-8:]
    allow = admin.create_policy({
        "name": f"Support Reads Customers {suffix}",
        "agents": [agent["id"]],
        "actions": ["read", "list"],
        "resources": ["api://crm/customers/*"],
        "effect": "allow",
        "constraints": {"maxRows": 100},
    })
    deny = admin.create_policy({
        "name": f"Never Delete {suffix}",
        "agents": [agent["id"]],
        "actions": ["delete"],
        "resources": ["api://crm/**"],
        "effect": "deny",
    })
    return agent, allow, deny


def test_every_call(admin, setup):
    agent, allow, deny = setup
    assert admin.get_agent(agent["id"])["metadata"] == {"openai_assistant_id": "asst_abc123"}
    assert agent["id"] in [a["id"] for a in admin.list_agents()]
    assert {allow["id"], deny["id"]} <= {p["id"] for p in admin.list_policies()}
    assert admin.get_policy(allow["id"])["constraints"] == {"maxRows": 100}

    tok = admin.issue_token(agent["id"], expires_in=600)
    assert tok.token.startswith("v4.public.") and tok.token_id.startswith("tok_")
    assert "v4.public" not in repr(tok), "the token never shows in a repr"

    d = admin.validate(tok.token, "read", "api://crm/customers/42")
    assert d.allowed and d.reason == "allowed" and d.policy_id == allow["id"]
    assert d.obligations == {"maxRows": 100} and d.audit_id.startswith("aud_")
    d = admin.validate(tok.token, "read", "api://crm/customers/42", {"rows": 500})
    assert not d.allowed and d.reason == "constraint_violated" and "maxRows" in d.message
    d = admin.validate(tok.token, "delete", "api://crm/customers/42")
    assert (d.allowed, d.reason, d.policy_id) == (False, "explicit_deny", deny["id"])
    assert admin.validate(None, "read", "api://crm/customers/1").reason == "token_missing"
    assert admin.validate("v4.public.forged", "read", "api://crm/customers/1").reason == "token_invalid"
    assert actgate.validate_with_act(admin, tok.token, "read", "api://crm/customers/7")

    with pytest.raises(actgate.Denied) as e:
        admin.require(tok.token, "delete", "api://crm/customers/42")
    assert e.value.reason == "explicit_deny" and e.value.decision.policy_id == deny["id"]
    assert admin.require(tok.token, "read", "api://crm/customers/1").allowed

    updated = dict(admin.get_policy(allow["id"]))
    updated["constraints"] = {"maxRows": 10}
    admin.update_policy(allow["id"], {k: updated[k] for k in ("name", "agents", "actions", "resources", "effect", "constraints")})
    assert admin.validate(tok.token, "read", "api://crm/customers/1", {"rows": 50}).reason == "constraint_violated"

    admin.revoke_token(tok.token_id)
    assert admin.validate(tok.token, "read", "api://crm/customers/42").reason == "token_revoked"
    tok2 = admin.issue_token(agent["id"])
    admin.revoke_agent(agent["id"])
    assert admin.validate(tok2.token, "read", "api://crm/customers/42").reason == "agent_revoked"
    admin.delete_policy(deny["id"])
    with pytest.raises(actgate.NotFound):
        admin.get_policy(deny["id"])


def test_errors_are_typed_and_name_what_to_fix(gateway, admin, setup):
    agent, _, _ = setup
    with pytest.raises(actgate.AuthenticationError):
        actgate.Client(gateway.api, api_key="not-a-key").list_agents()
    issuer = actgate.Client(gateway.api, api_key=ISSUER_KEY)
    with pytest.raises(actgate.PermissionDenied) as e:
        issuer.create_policy({"name": "widen", "actions": ["*"], "resources": ["**"], "effect": "allow"})
    assert "admin" in str(e.value) and e.value.status == 403
    with pytest.raises(actgate.InvalidRequest) as e:
        admin.issue_token(agent["id"], expires_in=10**9)
    assert e.value.problems and e.value.problems[0]["path"] == "expiresIn"
    assert "expiresIn" in str(e.value)
    with pytest.raises(actgate.NotFound):
        admin.get_agent("agent_does_not_exist")
    with pytest.raises(actgate.Conflict):
        admin.create_agent("dup", id=agent["id"])
    with pytest.raises(actgate.ConnectionFailed) as e:
        actgate.Client("http://127.0.0.1:9", api_key="k").list_agents()
    assert "is it running" in str(e.value)
    with pytest.raises(ValueError):
        admin.get_agent("../v1/policies")
    with pytest.raises(ValueError, match="ACTGATE_API_KEY"):
        actgate.Client(gateway.api, api_key="")


def test_audit_pages_through_every_event(admin, setup):
    agent, _, _ = setup
    tok = admin.issue_token(agent["id"])
    for i in range(7):
        admin.validate(tok.token, "read", f"api://crm/customers/{i}")
    for _ in range(100):
        events = list(admin.audit(agent_id=agent["id"], page_size=2))
        if len(events) >= 7:
            break
        time.sleep(0.05)
    assert len(events) == 7, events
    assert [e["resource"] for e in events] == [f"api://crm/customers/{i}" for i in reversed(range(7))]
    assert all(e["decision"] == "allowed" for e in events)
    assert list(admin.audit(agent_id=agent["id"], decision="denied")) == []
    with pytest.raises(ValueError):
        list(admin.audit(decision="maybe"))


def test_token_source_renews_before_expiry_and_expired_tokens_are_refused(admin, setup):
    agent, _, _ = setup
    with pytest.raises(ValueError, match="refresh_before"):
        actgate.TokenSource(admin, agent["id"], refresh_before=0)
    source = actgate.TokenSource(admin, agent["id"], ttl=2, refresh_before=1)
    first = source.token()
    assert source.token() == first and source.issued == 1
    time.sleep(1.1)
    second = source.token()
    assert second != first and source.issued == 2
    assert admin.validate(second, "read", "api://crm/customers/1").allowed
    time.sleep(3.2)  # first: 2 s lifetime + 1 s clock skew + 1 s of whole-second times, now past
    assert admin.validate(first, "read", "api://crm/customers/1").reason == "token_expired"
    third = source.token()
    assert admin.validate(third, "read", "api://crm/customers/1").allowed
    source.invalidate()
    assert source.token() != third and source.issued == 4


def test_token_source_issues_once_for_many_threads(admin, setup):
    agent, _, _ = setup
    source = actgate.TokenSource(admin, agent["id"], ttl=60)
    got: list[str] = []
    barrier = threading.Barrier(16)

    def take() -> None:
        barrier.wait()
        got.append(source.token())

    threads = [threading.Thread(target=take) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 16 and len(set(got)) == 1 and source.issued == 1


def test_guard_fills_the_resource_from_arguments_as_data(admin, setup):
    agent, _, _ = setup
    source = actgate.TokenSource(admin, agent["id"])
    ran: list[str] = []

    @admin.guard("read", "api://crm/customers/{customer_id}", source, context=lambda **_: {"rows": 1})
    def get_customer(customer_id: str) -> str:
        """Look up a customer."""
        ran.append(customer_id)
        return f"customer {customer_id}"

    @admin.guard("delete", "api://crm/customers/{customer_id}", source)
    def delete_customer(customer_id: str) -> None:
        ran.append("deleted")

    assert get_customer("42") == "customer 42"
    assert get_customer.__doc__ == "Look up a customer." and get_customer.__name__ == "get_customer"
    with pytest.raises(actgate.Denied) as e:
        delete_customer("42")
    assert e.value.reason == "explicit_deny"
    for sneaky in ["*", "42/../../admin", "{x}", "", "a\nb", ".", "..", "..%2Fsecret", "a\u0085b"]:
        with pytest.raises(ValueError):
            get_customer(sneaky)

    # Allowed, but the policy's maxRows was not checked (no rows sent): the function does not run.
    @admin.guard("read", "api://crm/customers/{customer_id}", source)
    def unchecked(customer_id: str) -> str:
        ran.append("unchecked")
        return customer_id

    with pytest.raises(actgate.ObligationUnmet, match="rows"):
        unchecked("42")
    assert ran == ["42"], "nothing ran but the allowed call"


def test_async_client_guard_and_source(gateway, setup):
    agent, _, _ = setup

    async def main() -> None:
        async with actgate.AsyncClient(gateway.api, api_key=ADMIN_KEY) as client:
            source = actgate.AsyncTokenSource(client, agent["id"], ttl=60)
            tokens = await asyncio.gather(*[source.token() for _ in range(10)])
            assert len(set(tokens)) == 1 and source.issued == 1

            @client.guard("read", "api://crm/customers/{cid}", source, context=lambda cid: {"rows": 1})
            async def read(cid: int) -> int:
                return cid

            assert await read(7) == 7
            d = await client.validate(tokens[0], "delete", "api://crm/customers/7")
            assert d.reason == "explicit_deny"
            events: list = []
            for _ in range(100):  # the batched audit commits within a flush interval
                events = [e async for e in client.audit(agent_id=agent["id"], page_size=1)]
                if len(events) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert len(events) >= 2  # paged one at a time

    asyncio.run(main())


def test_proxy_client_sends_the_current_token(gateway, admin, setup):
    agent, _, _ = setup
    source = actgate.TokenSource(admin, agent["id"], ttl=60)
    with admin.proxy_client(gateway.proxy, source) as http:
        r = http.get("/crm/customers/42")
        assert r.status_code == 200 and r.json()["id"] == "42"
        path, headers = Upstream.seen[-1]
        assert path == "/crm/customers/42"
        assert "authorization" not in {k.lower() for k in headers}, "actgate strips the token"
        assert {k.lower(): v for k, v in headers.items()}.get("x-act-agent-id") == agent["id"]
    with httpx.Client(base_url=gateway.proxy) as bare:
        assert bare.get("/crm/customers/42").status_code == 401
    # The token goes to the proxy only, never to a URL elsewhere.
    with admin.proxy_client(gateway.proxy, source) as http:
        with pytest.raises(ValueError, match="not actgate's proxy"):
            http.get("http://127.0.0.1:9/steal")
