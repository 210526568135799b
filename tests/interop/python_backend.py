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

It also reads every request the way lenient upstreams do, and remembers what it would have
served: `GET /__seen` (sent to it directly) answers the list of
  {"method", "path", "host", "user"}
where `method` is upper-cased with any X-HTTP-Method-Override / X-HTTP-Method /
X-Method-Override applied (Werkzeug, Rails, Laravel), `path` is the target with any scheme and
authority dropped (Werkzeug, Jetty 9.4), decoded twice, `;` parameters stripped from every
segment (servlet containers) and dot segments resolved, `host` is X-Forwarded-Host, a
`Forwarded: host=`, or Host (a framework that trusts its proxy), and `user` is the X-User
identity header. The attack tests use it to prove that no request was served as a protected
resource without an identity.
"""

import json
import os
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


def _arg(index, env, default):
    if len(sys.argv) > index and sys.argv[index] != "":
        return sys.argv[index]
    value = os.environ.get(env)
    return value if value not in (None, "") else default


PORT = int(_arg(1, "PORT", "0"))
BACKEND_NAME = _arg(2, "BACKEND_NAME", "python")


SEEN = []
SEEN_LOCK = threading.Lock()


def lenient_path(target):
    t = target.split("?", 1)[0]
    if "://" in t:
        rest = t.split("://", 1)[1]
        t = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", t):
        t = t.split(":", 1)[1]
    for _ in range(2):
        t = unquote(t)
    segments = []
    for seg in t.replace("\\", "/").split("/"):
        seg = seg.split(";", 1)[0]
        if seg in ("", "."):
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    return "/" + "/".join(segments)


def lenient_host(headers):
    if headers.get("x-forwarded-host"):
        return headers["x-forwarded-host"].split(",")[0].strip()
    m = re.search(r"host=\"?([^;,\"]+)", headers.get("forwarded", ""), re.I)
    if m:
        return m.group(1)
    return headers.get("host", "")


def lenient_method(command, headers):
    for h in ("x-http-method-override", "x-http-method", "x-method-override"):
        if headers.get(h):
            return headers[h].upper()
    return command.upper()


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

        if self.path == "/__seen":
            with SEEN_LOCK:
                payload = json.dumps(SEEN).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        with SEEN_LOCK:
            SEEN.append(
                {
                    "method": lenient_method(self.command, headers),
                    "path": lenient_path(self.path),
                    "host": lenient_host(headers).split(":")[0].lower(),
                    "user": headers.get("x-user"),
                }
            )

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

    def __getattr__(self, name):
        # Any other method, in any case (`post`, `Delete`): served like its upper-case self,
        # as Werkzeug does.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

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
