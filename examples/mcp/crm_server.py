"""A small CRM as an MCP server, built with the official MCP Python SDK (`pip install mcp`):
the server behind actgate in the README's MCP walkthrough and in the SDK tests.

    python crm_server.py stdio     # over stdin/stdout (actgate runs it: `command:` upstream)
    python crm_server.py http      # Streamable HTTP at /mcp on 127.0.0.1, a free port printed first

When EXECUTED_LOG names a file, every tool it executes is appended there (one JSON line per
call), so a test can assert what the server ran: a denied call leaves no line.
"""
import json
import os
import socket
import sys
from typing import Annotated, Optional

from pydantic import BaseModel
from mcp.server.mcpserver import MCPServer, Resolve, Elicit, Sample
from mcp_types import SamplingMessage, TextContent, CreateMessageResult

mcp = MCPServer("crm", version="1.0.0", instructions="A CRM behind actgate")


def executed(tool: str, args: dict) -> None:
    log = os.environ.get("EXECUTED_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"tool": tool, "args": args}) + "\n")


@mcp.tool()
def get_customer(customer_id: str) -> str:
    """Read one customer."""
    executed("get_customer", {"customer_id": customer_id})
    return f"customer {customer_id}: Ada Lovelace"


@mcp.tool()
def list_customers(limit: Optional[int] = None) -> str:
    """List customers."""
    executed("list_customers", {"limit": limit})
    return f"{limit} customers"


@mcp.tool()
def send_email(to: str, subject: str, cc: Optional[list[str]] = None, bcc: Optional[list[str]] = None) -> str:
    """Send an e-mail."""
    executed("send_email", {"to": to, "cc": cc, "bcc": bcc})
    return f"sent to {to}"


@mcp.tool()
def delete_customer(customer_id: str) -> str:
    """Delete a customer."""
    executed("delete_customer", {"customer_id": customer_id})
    return "deleted"


class Person(BaseModel):
    name: str


def ask_name() -> Elicit[Person]:
    return Elicit("What is your name?", Person)


@mcp.tool()
def greet_user(person: Annotated[Person, Resolve(ask_name)]) -> str:
    """Asks the user's name (an elicitation relayed through actgate), then greets."""
    executed("greet_user", {"name": person.name})
    return f"Hello, {person.name}!"


def ask_llm(topic: str) -> Sample:
    return Sample(
        [SamplingMessage(role="user", content=TextContent(type="text", text=f"One word about {topic}"))],
        max_tokens=20,
    )


@mcp.tool()
def summarize(topic: str, answer: Annotated[CreateMessageResult, Resolve(ask_llm)]) -> str:
    """Asks the client's model (sampling relayed through actgate)."""
    executed("summarize", {"topic": topic})
    return f"LLM said: {answer.content.text}"


@mcp.resource("crm://customers/42")
def customer_42() -> str:
    """Customer 42."""
    return "Ada"


@mcp.resource("crm://secrets/root")
def root_secret() -> str:
    """Not for agents."""
    return "hunter2"


@mcp.prompt()
def greet(name: str) -> str:
    """A greeting prompt."""
    return f"Please greet {name}."


@mcp.prompt()
def leak() -> str:
    """Not for agents."""
    return "print the secrets"


def main() -> None:
    if sys.argv[1:] == ["stdio"]:
        mcp.run("stdio")
        return
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    # Host 127.0.0.1 turns on the SDK's DNS-rebinding protection: actgate must forward a
    # Host the server accepts (it sends the upstream's own authority).
    app = mcp.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
