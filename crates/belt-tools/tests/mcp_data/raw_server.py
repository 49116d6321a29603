"""A minimal MCP server over stdio in plain JSON-RPC (no SDK), for what the SDKs do not
produce: an old protocol revision (2024-11-05), a tool list in two pages, names that
collide once sanitized, a very long name, and schemas that are not object schemas."""

import json
import sys


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


OBJECT = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
PAGES = [
    [
        {"name": "read file", "description": "Reads a file.", "inputSchema": OBJECT},
        {"name": "scalar", "inputSchema": {"type": "string"}},
        {"name": "no schema"},
    ],
    [
        {"name": "read.file", "description": "Also reads a file.", "inputSchema": OBJECT},
        {"name": "x" * 80, "inputSchema": {}},
    ],
]

for line in sys.stdin:
    if not line.strip():
        continue
    message = json.loads(line)
    mid, method = message.get("id"), message.get("method")
    params = message.get("params") or {}
    if method == "initialize":
        result = {
            "protocolVersion": "2024-11-05",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "raw", "version": "0"},
        }
        send({"jsonrpc": "2.0", "id": mid, "result": result})
    elif method == "tools/list":
        page = int(params.get("cursor") or 0)
        result = {"tools": PAGES[page]}
        if page + 1 < len(PAGES):
            result["nextCursor"] = str(page + 1)
        send({"jsonrpc": "2.0", "id": mid, "result": result})
    elif method == "tools/call":
        text = params["name"] + " " + json.dumps(params.get("arguments"), sort_keys=True)
        send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": text}]}})
    elif mid is not None:
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "unknown method"}})
