"""A fake SearXNG instance for belt's end-to-end web tests: `GET /search?q=…&format=json`
answers two results on this server, `GET /tea` and `GET /green` are HTML pages. It prints
its port on stdout, then serves until killed; each search's query goes to $SEARCH_LOG."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        base = f"http://127.0.0.1:{self.server.server_port}"
        if url.path == "/search":
            query = parse_qs(url.query)
            if query.get("format") != ["json"]:
                return self.reply(403, "text/plain", b"format not allowed")
            with open(os.environ["SEARCH_LOG"], "a") as f:
                f.write(query.get("q", [""])[0] + "\n")
            results = [
                {"title": "A history of tea", "url": f"{base}/tea", "content": "Tea began in China."},
                {"title": "Green tea", "url": f"{base}/green", "content": "Green tea is unoxidised."},
            ]
            return self.reply(200, "application/json", json.dumps({"results": results}).encode())
        if url.path in ("/tea", "/green"):
            body = f"<html><head><title>{url.path[1:]}</title></head><body><p>About {url.path[1:]}.</p></body></html>"
            return self.reply(200, "text/html; charset=utf-8", body.encode())
        self.reply(404, "text/plain", b"no such page")

    def reply(self, code, kind, body):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_port, flush=True)
server.serve_forever()
