"""Stand-in API for the compose end-to-end test: 200 + JSON echo on any path, port 8000."""
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, with_body):
        body = json.dumps({
            "service": "stand-in-api",
            "path": self.path,
            "host": self.headers.get("Host", ""),
            "x_forwarded_proto": self.headers.get("X-Forwarded-Proto", ""),
            "x_forwarded_for": self.headers.get("X-Forwarded-For", ""),
            "status": "ok",
        }).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen-Forwarded-Proto", self.headers.get("X-Forwarded-Proto", ""))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):
        self._answer(True)

    def do_HEAD(self):
        self._answer(False)

    def log_message(self, fmt, *args):
        sys.stderr.write("api: " + (fmt % args) + "\n")


def main():
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"stand-in api listening on :{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
