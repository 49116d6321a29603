"""The MCP Python SDK as a user's client: starts `belt ARGS...` over stdio (or, given a URL
first, connects to `belt serve`'s /mcp over streamable HTTP with the bearer token in
BELT_API_TOKEN), lists the tools, runs a cascade with its numbers sent as strings (as
form-based clients send them), lists the runs, asks for a run that does not exist, and prints
what it got as JSON. The SDK's log (warnings and up) goes to stderr, where a test reads it:
closing a session must log nothing."""
import asyncio
import contextlib
import json
import logging
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


@contextlib.asynccontextmanager
async def connect(argv):
    if argv[0].startswith("http"):
        headers = {"Authorization": "Bearer " + os.environ["BELT_API_TOKEN"]}
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(argv[0], http_client=http) as (read, write, _):
                yield read, write
    else:
        server = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
        async with stdio_client(server) as (read, write):
            yield read, write


async def main():
    async with connect(sys.argv[1:]) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            schemas = {t.name: t.inputSchema for t in tools.tools}
            run = await session.call_tool(
                "run_workflow",
                {"task": "Name three rivers", "agents": "3", "sim_latency_ms": "0", "budget_usd": "1.5"},
            )
            runs = await session.call_tool("list_runs", {"limit": "1"})
            unknown = await session.call_tool("get_run", {"run_id": "no-such-run"})
            text = lambda r: "".join(c.text for c in r.content if c.type == "text")
            result = {
                "server": {"name": init.serverInfo.name, "version": init.serverInfo.version,
                           "instructions": init.instructions},
                "schemas": schemas,
                "run": {"is_error": run.isError, "text": text(run)},
                "runs": {"is_error": runs.isError, "text": text(runs)},
                "unknown": {"is_error": unknown.isError, "text": text(unknown)},
            }
    # Printed once the session is closed (the DELETE of an HTTP session has been answered).
    print(json.dumps(result))


logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
asyncio.run(main())
