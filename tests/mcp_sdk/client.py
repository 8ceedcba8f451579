"""An agent's side of the MCP SDK tests: the official Python SDK's Client, through actgate.

    python client.py URL TOKEN MODE [--other-token T] [--api URL --admin-key K --token-id ID]
                     [--scenario full|delete-only]

MODE is `auto` (the SDK's default: it probes server/discover, the 2026-07-28 revision) or
`legacy` (the initialize handshake of 2025-11-25). Prints one JSON object: what each step
saw. The Rust test (tests/mcp_sdk.rs) asserts on it and on what the server executed.
"""
import asyncio
import json
import sys

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def arg(name, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


URL, TOKEN, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
OTHER = arg("--other-token")
API, ADMIN_KEY, TOKEN_ID = arg("--api"), arg("--admin-key"), arg("--token-id")
SCENARIO = arg("--scenario", "full")


async def sampling(ctx, params):
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="Blue"), model="scripted", stop_reason="endTurn"
    )


async def elicitation(ctx, params):
    return types.ElicitResult(action="accept", content={"name": "Ada"})


def result(r):
    text = " ".join(c.text for c in r.content if getattr(c, "type", "") == "text")
    return {"isError": bool(r.is_error), "text": text}


async def attempt(coro):
    try:
        return {"ok": await coro}
    except MCPError as e:
        return {"error": e.error.code, "message": e.error.message}
    except Exception as e:  # noqa: BLE001 - report whatever the SDK raised
        return {"raised": type(e).__name__, "message": str(e)}


async def main():
    out = {}
    sessions = []

    async def remember_session(response):
        sid = response.headers.get("mcp-session-id")
        if sid:
            sessions.append(sid)

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=httpx2.Timeout(30, read=300),
        event_hooks={"response": [remember_session]},
    )
    server = streamable_http_client(URL, http_client=http)
    async with Client(server, mode=MODE, sampling_callback=sampling, elicitation_callback=elicitation) as c:
        out["protocol"] = c.protocol_version
        if SCENARIO == "delete-only":
            out["delete"] = result(await c.call_tool("delete_customer", {"customer_id": "42"}))
            print(json.dumps(out))
            return
        out["tools"] = sorted(t.name for t in (await c.list_tools()).tools)
        out["resources"] = sorted(r.uri for r in (await c.list_resources()).resources)
        out["prompts"] = sorted(p.name for p in (await c.list_prompts()).prompts)
        out["allowed"] = result(await c.call_tool("get_customer", {"customer_id": "42"}))
        out["rows_default"] = result(await c.call_tool("list_customers", {}))
        out["denied_delete"] = result(await c.call_tool("delete_customer", {"customer_id": "42"}))
        out["denied_rows"] = result(await c.call_tool("list_customers", {"limit": 500}))
        out["denied_bcc"] = result(
            await c.call_tool("send_email", {"to": "a@yourcompany.com", "subject": "s", "bcc": ["eve@evil.com"]})
        )
        out["allowed_email"] = result(await c.call_tool("send_email", {"to": "a@yourcompany.com", "subject": "s"}))
        out["wildcard"] = await attempt(c.call_tool("get_customer", {"customer_id": "*"}))
        out["traversal"] = await attempt(c.call_tool("get_customer", {"customer_id": "../admin"}))
        out["elicit"] = result(await c.call_tool("greet_user", {}))
        out["sample"] = result(await c.call_tool("summarize", {"topic": "sky"}))
        out["resource_allowed"] = await attempt(c.read_resource("crm://customers/42"))
        out["resource_allowed"] = "ok" in out["resource_allowed"]
        out["resource_denied"] = await attempt(c.read_resource("crm://secrets/root"))
        out["prompt_denied"] = await attempt(c.get_prompt("leak", {}))

        # Raw requests no SDK would send, on the same endpoint.
        raw = httpx2.AsyncClient(timeout=10)
        batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]
        r = await raw.post(URL, json=batch, headers={"Authorization": f"Bearer {TOKEN}", "accept": "application/json, text/event-stream"})
        out["batch"] = {"status": r.status_code, "code": r.json()["error"]["code"]}
        if MODE == "legacy" and sessions and OTHER:
            body = {"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "get_customer", "arguments": {"customer_id": "7"}}}
            r = await raw.post(
                URL,
                json=body,
                headers={
                    "Authorization": f"Bearer {OTHER}",
                    "mcp-session-id": sessions[0],
                    "mcp-protocol-version": "2025-11-25",
                    "accept": "application/json, text/event-stream",
                },
            )
            out["hijack"] = {"status": r.status_code}
        await raw.aclose()

        if API and ADMIN_KEY and TOKEN_ID:
            # Revoke this very token mid-session: the next message is refused.
            async with httpx2.AsyncClient(timeout=10) as api:
                r = await api.delete(f"{API}/v1/tokens/{TOKEN_ID}", headers={"X-Api-Key": ADMIN_KEY})
                out["revoke_status"] = r.status_code
            out["after_revoke"] = await attempt(c.call_tool("get_customer", {"customer_id": "42"}))
    print(json.dumps(out))


try:
    asyncio.run(main())
except BaseExceptionGroup as group:  # the SDK raises task-group errors on the way out
    print(json.dumps({"failed": [repr(e) for e in group.exceptions]}))
    sys.exit(1)
