#!/usr/bin/env bash
# The book's quick start (docs/src/getting-started.md), as one script: tests/examples.rs runs
# it against the real binary, and checks the book's copy of its commands is this one.
#
# Needs: an actgate binary (ACTGATE, default target/release/actgate), curl and jq. It starts
# actgate on its embedded defaults in a temporary directory (ports 8080, 8081, 9464).
set -euo pipefail
ACTGATE=$(realpath "${ACTGATE:-target/release/actgate}")
WORK=$(mktemp -d)
cd "$WORK"
unset ACTGATE_API_KEY
$ACTGATE serve 2> actgate.log &
trap 'kill %1 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
until curl -sf http://127.0.0.1:9464/readyz > /dev/null; do sleep 0.1; done

# The book's commands, from here on.
API=http://127.0.0.1:8081
ADMIN_KEY=$(cat data/admin.key)            # generated at the first start (no key configured)

# 1. Register the assistant, and give it the guide's policy.
AGENT=$(curl -s -X POST $API/v1/agents -H "X-Api-Key: $ADMIN_KEY" -H "Content-Type: application/json" \
  -d '{"name": "OpenAI Customer Support Assistant", "metadata": {"openai_assistant_id": "asst_abc123"}}' | jq -r .id)
curl -s -X POST $API/v1/policies -H "X-Api-Key: $ADMIN_KEY" -H "Content-Type: application/json" \
  -d '{"name": "Customer Support Read Policy", "actions": ["read", "list"],
       "resources": ["api://crm/customers/*"], "effect": "allow", "constraints": {"maxRows": 100}}' | jq -c '{id, name}'

# 2. The tool-runner gets an issuer key for this agent (never the admin key), and mints its token.
ISSUER_KEY=$(curl -s -X POST $API/v1/apikeys -H "X-Api-Key: $ADMIN_KEY" -H "Content-Type: application/json" \
  -d "{\"name\": \"support-tool-runner\", \"role\": \"issuer\", \"agents\": [\"$AGENT\"]}" | jq -r .key)
TOKEN_JSON=$(curl -s -X POST $API/v1/tokens -H "X-Api-Key: $ISSUER_KEY" -H "Content-Type: application/json" \
  -d "{\"agentId\": \"$AGENT\", \"expiresIn\": 3600}")
TOKEN=$(echo "$TOKEN_JSON" | jq -r .token); TOKEN_ID=$(echo "$TOKEN_JSON" | jq -r .tokenId)

# 3. Validate calls before running them (what the guide's validateWithACT sends).
enforce() {  # enforce <action> <resource> [context JSON]
  curl -s -X POST $API/v1/enforce -H "X-Api-Key: $ISSUER_KEY" -H "Content-Type: application/json" \
    -d "{\"capabilityToken\": \"$TOKEN\", \"action\": \"$1\", \"resourceId\": \"$2\", \"context\": ${3:-{\}}}" \
    | jq -c '{decision, reason}'
}
echo "== read customer 123:";            enforce read api://crm/customers/123
echo "== list 500 customers:";           enforce list api://crm/customers/123 '{"rows": 500}'
echo "== delete customer 123:";          enforce delete api://crm/customers/123
echo "== the issuer key cannot widen its own permissions:"
curl -s -X POST $API/v1/policies -H "X-Api-Key: $ISSUER_KEY" -H "Content-Type: application/json" \
  -d '{"name": "everything", "actions": ["*"], "resources": ["**"], "effect": "allow"}' | jq -c '{error}'

# 4. Revoke the token: the next decision is denied.
curl -s -X DELETE $API/v1/tokens/$TOKEN_ID -H "X-Api-Key: $ADMIN_KEY" > /dev/null
echo "== read after revoking the token:"; enforce read api://crm/customers/123

# 5. Every decision is in the audit trail, oldest first here.
echo "== the audit trail:"
curl -s "$API/v1/audit?agentId=$AGENT" -H "X-Api-Key: $ADMIN_KEY" | jq -c '.events | reverse[] | {action, decision, reason}'
