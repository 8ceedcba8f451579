// An agent's side of the MCP SDK tests, in TypeScript: the official SDK's client
// (@modelcontextprotocol/client 2.x) through actgate.
//
//     node client.mjs URL TOKEN MODE      MODE: auto (probes server/discover, 2026-07-28) | legacy
//
// Prints one JSON object: what each step saw. tests/mcp_sdk.rs asserts on it.
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const [url, token, mode] = process.argv.slice(2);
const client = new Client(
  { name: 'actgate-ts-test', version: '1.0.0' },
  { capabilities: { elicitation: {}, sampling: {} }, versionNegotiation: { mode } },
);
client.setRequestHandler('elicitation/create', async () => ({ action: 'accept', content: { name: 'Ada' } }));
client.setRequestHandler('sampling/createMessage', async () => ({
  role: 'assistant', content: { type: 'text', text: 'Blue' }, model: 'scripted',
}));
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});

const text = (r) => ({ isError: Boolean(r.isError), text: r.content.filter((c) => c.type === 'text').map((c) => c.text).join(' ') });
const attempt = async (f) => {
  try { return { ok: await f() }; } catch (e) { return { error: e?.code ?? null, message: String(e?.message ?? e) }; }
};

const out = {};
await client.connect(transport);
out.protocol = client.getNegotiatedProtocolVersion();
out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
out.allowed = text(await client.callTool({ name: 'get_customer', arguments: { customer_id: '42' } }));
out.denied_delete = text(await client.callTool({ name: 'delete_customer', arguments: { customer_id: '42' } }));
out.denied_rows = text(await client.callTool({ name: 'list_customers', arguments: { limit: 500 } }));
out.wildcard = await attempt(() => client.callTool({ name: 'get_customer', arguments: { customer_id: '*' } }));
out.elicit = text(await client.callTool({ name: 'greet_user', arguments: {} }));
out.sample = text(await client.callTool({ name: 'summarize', arguments: { topic: 'sky' } }));
await client.close();
console.log(JSON.stringify(out));
