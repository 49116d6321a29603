"""An MCP server written with the official Python SDK (FastMCP), over stdio, for
belt-tools' MCP client tests: a tool marked idempotent, one that fails, one that tells its
process id (so a test can kill it) and one that crashes the server."""

import os
import sys

from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations

mcp = FastMCP("belt-test")


@mcp.tool(annotations=ToolAnnotations(idempotentHint=True))
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@mcp.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"failed on purpose: {reason}")


@mcp.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@mcp.tool()
def crash() -> str:
    """Ends the server's process mid-call."""
    print("about to crash on purpose", file=sys.stderr, flush=True)
    os._exit(3)


if __name__ == "__main__":
    mcp.run()
