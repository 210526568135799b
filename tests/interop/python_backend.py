#!/usr/bin/env python3
"""Tiny echo backend for sessiongate integration tests (stdlib only).

Usage: python_backend.py [PORT] [BACKEND_NAME]
  or env PORT (default 0 = pick a free port) and BACKEND_NAME (default "python").

Listens on 127.0.0.1. Once listening, prints exactly one line
`LISTENING <port>` to stdout (flushed). Every request (any method, any path)
gets HTTP/1.1 200 with a JSON body:
  {"backend": name, "method": ..., "path": raw request target,
   "headers": {lowercased name: value}, "body": request body as text}
Repeated headers are joined with ", " (cookie headers with "; ").
Exits promptly on SIGTERM / SIGINT.
"""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _arg(index, env, default):
    if len(sys.argv) > index and sys.argv[index] != "":
        return sys.argv[index]
    value = os.environ.get(env)
    return value if value not in (None, "") else default


PORT = int(_arg(1, "PORT", "0"))
BACKEND_NAME = _arg(2, "BACKEND_NAME", "python")


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "interop-python"

    def _handle(self):
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            if key in headers:
                sep = "; " if key == "cookie" else ", "
                headers[key] = headers[key] + sep + value
            else:
                headers[key] = value

        body = b""
        length = self.headers.get("Content-Length")
        if length:
            try:
                body = self.rfile.read(int(length))
            except ValueError:
                body = b""
        elif "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()

        payload = json.dumps(
            {
                "backend": BACKEND_NAME,
                "method": self.command,
                "path": self.path,
                "headers": headers,
                "body": body.decode("utf-8", "replace"),
            }
        ).encode("utf-8")

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_chunked(self):
        chunks = []
        while True:
            line = self.rfile.readline(65537)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # consume trailers up to the empty line
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)  # CRLF after chunk
        return b"".join(chunks)

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_PATCH = _handle
    do_DELETE = _handle
    do_HEAD = _handle
    do_OPTIONS = _handle

    def log_message(self, fmt, *args):  # keep test output quiet
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    server = Server(("127.0.0.1", PORT), EchoHandler)

    def stop(_signum, _frame):
        # server_close + os._exit: do not wait for keep-alive handler threads.
        try:
            server.server_close()
        finally:
            os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sys.stdout.write("LISTENING %d\n" % server.server_address[1])
    sys.stdout.flush()
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
