"""The MCP Python SDK as a user's client: starts `belt ARGS...` over stdio, lists the tools,
runs a cascade with its numbers sent as strings (as form-based clients send them), lists the
runs, and prints what it got as JSON."""
import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main():
    server = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:], env=dict(os.environ))
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            schemas = {t.name: t.inputSchema for t in tools.tools}
            run = await session.call_tool(
                "run_workflow",
                {"task": "Name three rivers", "agents": "3", "sim_latency_ms": "0", "budget_usd": "1.5"},
            )
            runs = await session.call_tool("list_runs", {"limit": "1"})
            text = lambda r: "".join(c.text for c in r.content if c.type == "text")
            print(json.dumps({
                "schemas": schemas,
                "run": {"is_error": run.isError, "text": text(run)},
                "runs": {"is_error": runs.isError, "text": text(runs)},
            }))


asyncio.run(main())
