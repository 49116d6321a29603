"""An MCP server (the official Python SDK's FastMCP, stdio) for belt's end-to-end tool tests.

`lookup` appends one line per call to $FACTS_LOG, so a test counts the calls a run made. It
ends its own process mid-call on the call numbered $FACTS_DIE_AT (a crash), and sleeps for
10 s while the file $FACTS_SLOW exists (a hung tool)."""

import os
import time

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("facts")


@mcp.tool()
def lookup(topic: str) -> str:
    """Look up a fact about a topic."""
    log = os.environ["FACTS_LOG"]
    with open(log, "a") as f:
        f.write(f"{topic}\n")
    with open(log) as f:
        calls = sum(1 for _ in f)
    if os.environ.get("FACTS_DIE_AT") == str(calls):
        os._exit(3)
    slow = os.environ.get("FACTS_SLOW")
    while slow and os.path.exists(slow):
        time.sleep(0.05)
    return f"fact #{calls}: {topic or 'everything'} is well documented"


if __name__ == "__main__":
    mcp.run()
