"""The README snippets (sdk/python/README.md and the repository README's "Clients"), run as
written: tests/sdk.rs checks that every line of their code blocks is in this file."""

from __future__ import annotations

import asyncio

import pytest

import actgate
from conftest import ADMIN_KEY


def test_readme_quick_start(gateway):
    api, admin_key = gateway.api, ADMIN_KEY
    setup = actgate.Client(api, api_key=admin_key)
    policy = setup.create_policy({"name": "readme reads", "actions": ["read"], "resources": ["api://crm/customers/*"], "effect": "allow", "constraints": {"maxRows": 100}})

    client = actgate.Client(api, api_key=admin_key)
    agent = client.create_agent("Customer Support Assistant", metadata={"openai_assistant_id": "asst_abc123"})
    tokens = actgate.TokenSource(client, agent["id"], ttl=900)

    decision = client.validate(tokens.token(), "read", "api://crm/customers/42", {"rows": 1})
    print(decision.allowed, decision.reason, decision.message, decision.policy_id, decision.obligations)
    assert decision.allowed and decision.policy_id == policy["id"] and decision.obligations == {"maxRows": 100}

    with pytest.raises(actgate.Denied):
        client.require(tokens.token(), "delete", "api://crm/customers/42")  # raises actgate.Denied

    @client.guard("read", "api://crm/customers/{customer_id}", tokens, context=lambda customer_id: {"rows": 1})
    def get_customer(customer_id: str) -> dict:
        return {"id": customer_id}

    assert get_customer("42") == {"id": "42"}
    with pytest.raises(ValueError):
        get_customer("*")
    setup.delete_policy(policy["id"])


def test_readme_agents_tool(gateway):
    pytest.importorskip("agents")
    from actgate.agents import guarded_tool

    api, admin_key = gateway.api, ADMIN_KEY
    client = actgate.AsyncClient(api, api_key=admin_key)

    @guarded_tool(client, action="send_email", resource="api://email/outbound",
                  context=lambda to, **_: {"to": [to]})
    async def send_email(to: str, subject: str, body: str) -> str:
        return f"sent to {to}"

    assert send_email.name == "send_email"
    assert set(send_email.params_json_schema["properties"]) == {"to", "subject", "body"}
    asyncio.run(client.aclose())
