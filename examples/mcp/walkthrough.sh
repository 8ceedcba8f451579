#!/usr/bin/env bash
# The README's MCP walkthrough, as one script (tests/examples.rs runs it): actgate in front of
# an MCP server, an agent's token, and what happens to its calls.
#
# Needs: an actgate binary (ACTGATE, default target/release/actgate), python3 with the MCP SDK
# (`pip install mcp`), curl and jq. Run from the repository's root.
set -euo pipefail
ACTGATE=${ACTGATE:-target/release/actgate}
export ACTGATE_API_KEY=${ACTGATE_API_KEY:-$(openssl rand -hex 32)}
API=http://127.0.0.1:8081
MCP=http://127.0.0.1:8080/mcp/crm

# 1. Start actgate with the MCP example config (it runs the MCP server itself, over stdio).
rm -rf data-mcp-example
$ACTGATE serve --config config/examples/mcp.yaml 2> actgate-mcp-example.log &
trap 'kill %1 2>/dev/null; wait 2>/dev/null; rm -rf data-mcp-example actgate-mcp-example.log' EXIT
until curl -sf http://127.0.0.1:9464/readyz > /dev/null; do sleep 0.1; done

# 2. Register the agent and issue it a token (what its tool-runner does).
AGENT=$(curl -s -X POST $API/v1/agents -H "X-Api-Key: $ACTGATE_API_KEY" -H "Content-Type: application/json" \
  -d '{"name": "Support Assistant"}' | jq -r .id)
TOKEN=$(curl -s -X POST $API/v1/tokens -H "X-Api-Key: $ACTGATE_API_KEY" -H "Content-Type: application/json" \
  -d "{\"agentId\": \"$AGENT\", \"expiresIn\": 900}" | jq -r .token)

# 3. Speak MCP through actgate, as any MCP client does (here the 2025-11-25 handshake).
SESSION=$(curl -s -D - -o /dev/null -X POST $MCP -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" -H "Accept: application/json, text/event-stream" \
  -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}' \
  | tr -d '\r' | sed -n 's/^mcp-session-id: //Ip')
mcp() {  # mcp <JSON-RPC message>: POST it on the session; print the answer (JSON, or its events' data)
  curl -s -X POST $MCP -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
    -H "Accept: application/json, text/event-stream" -H "MCP-Protocol-Version: 2025-11-25" \
    -H "Mcp-Session-Id: $SESSION" -d "$1" | sed -n 's/^data: //p;/^{/p'
}
mcp '{"jsonrpc":"2.0","method":"notifications/initialized"}'

echo "== the tools this agent sees (delete_customer is hidden):"
mcp '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' | jq -c '[.result.tools[].name]'

echo "== an allowed call:"
mcp '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_customer","arguments":{"customer_id":"42"}}}' \
  | jq -c '.result | {isError, text: .content[0].text}'

echo "== a denied call, answered by actgate (the server never runs it):"
mcp '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"delete_customer","arguments":{"customer_id":"42"}}}' \
  | jq -c '.result | {isError, reason: ._meta["io.actgate/decision"].reason}'

echo "== a constraint on the arguments (maxRows 100):"
mcp '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"list_customers","arguments":{"limit":500}}}' \
  | jq -c '.result | {isError, reason: ._meta["io.actgate/decision"].reason}'

sleep 0.5  # the batched audit writer commits every few milliseconds
echo "== the audit trail of this agent:"
curl -s "$API/v1/audit?agentId=$AGENT&limit=10" -H "X-Api-Key: $ACTGATE_API_KEY" \
  | jq -c '.events | reverse | .[] | {mcpMethod, tool, decision, reason}'
