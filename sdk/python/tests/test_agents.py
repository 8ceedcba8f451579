"""actgate.agents with the OpenAI Agents SDK: a scripted model (offline) calling guarded tools
against the real actgate binary."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

import actgate

agents_sdk = pytest.importorskip("agents", reason="openai-agents is not installed (pip install 'actgate[agents]')")
from agents import Agent, Runner, set_tracing_disabled  # noqa: E402
from agents.testing import ScriptedModel, assistant_message, function_call  # noqa: E402

from actgate.agents import guarded_tool  # noqa: E402
from conftest import ADMIN_KEY  # noqa: E402

set_tracing_disabled(True)


@dataclass
class RunToken:
    token: str = field(repr=False)


def test_guarded_tools_allowed_denied_and_constrained(gateway):
    admin = actgate.Client(gateway.api, api_key=ADMIN_KEY)
    agent = admin.create_agent("Agents SDK support bot")
    admin.create_policy({
        "name": f"mail inside {agent['id']}",
        "agents": [agent["id"]],
        "actions": ["send_email"],
        "resources": ["api://email/outbound"],
        "effect": "allow",
        "constraints": {"allowedDomains": ["yourcompany.com"]},
    })
    admin.create_policy({
        "name": f"read customers {agent['id']}",
        "agents": [agent["id"]],
        "actions": ["read"],
        "resources": ["api://crm/customers/*"],
        "effect": "allow",
    })
    sent: list[str] = []

    async def main() -> None:
        async with actgate.AsyncClient(gateway.api, api_key=ADMIN_KEY) as client:

            @guarded_tool(client, action="send_email", resource="api://email/outbound", context=lambda to, **_: {"to": [to]})
            async def send_email(to: str, subject: str) -> str:
                """Send an e-mail.

                Args:
                    to: recipient address
                    subject: subject line
                """
                sent.append(to)
                return f"sent to {to}"

            @guarded_tool(client, action="delete", resource="api://crm/customers/{customer_id}")
            def delete_customer(customer_id: str) -> str:
                """Delete a customer."""
                sent.append("deleted")
                return "deleted"

            model = ScriptedModel([
                [
                    function_call("send_email", {"to": "bob@yourcompany.com", "subject": "hi"}, call_id="c1"),
                    function_call("send_email", {"to": "eve@evil.example", "subject": "leak"}, call_id="c2"),
                    function_call("delete_customer", {"customer_id": "42"}, call_id="c3"),
                ],
                [assistant_message("done")],
            ])
            bot = Agent[RunToken](name="support", model=model, tools=[send_email, delete_customer])
            token = (await client.issue_token(agent["id"])).token
            result = await Runner.run(bot, "mail bob and eve, delete 42", context=RunToken(token))
            assert result.final_output == "done"
            # The token is the run's context: never in the tool schema the model sees.
            schemas = {t.name: t.params_json_schema for t in model.first_call.tools}
            assert set(schemas["send_email"]["properties"]) == {"to", "subject"}
            assert set(schemas["delete_customer"]["properties"]) == {"customer_id"}
            outputs = {i["call_id"]: i["output"] for i in model.calls[1].input if isinstance(i, dict) and i.get("type") == "function_call_output"}
            assert outputs["c1"] == "sent to bob@yourcompany.com"
            assert "denied by actgate (constraint_violated)" in outputs["c2"] and "evil.example" in outputs["c2"]
            assert "denied by actgate (no_matching_policy)" in outputs["c3"]
            assert token not in str(model.calls[1].input)

    asyncio.run(main())
    assert sent == ["bob@yourcompany.com"], "only the allowed call ran"
