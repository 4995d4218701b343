"""A fault-injecting HTTP proxy on 127.0.0.1, in front of an object store or HTTP server.

It forwards every request to `upstream` (moto's S3 server, `python -m http.server`) and,
on a fixed schedule, answers instead with what object stores do under load: `503` (S3's
SlowDown, XML body), `reset` (the status line, headers and half the body, then a TCP
reset), `stall` (no answer for `stall_s`, then the connection closed). The schedule is a
cycle of actions per request method and path (query strings ignored), so the n-th GET
(or HEAD, PUT) of a file gets `schedule[n % len(schedule)]` whichever process sends it: a
run through the proxy meets the same faults every time. `("503",)` is an outage that never ends.

Used by the tests (tests/data/test_faults.py) and, in its own process, by
benchmarks/stream_throughput.py:

    python -m benchmarks.fault_proxy UPSTREAM_URL PORT [--schedule 503,ok,...] [--stall-s S]

Stopped with SIGTERM, it prints the requests it saw per method and the faults it injected
(one JSON line), so a caller counts the requests a run makes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ACTIONS = ("ok", "503", "reset", "stall")
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class FaultProxy:
    """`with FaultProxy(upstream, schedule) as proxy:` serves at `proxy.url`; counts the
    requests it saw and the faults it injected (`proxy.faults`)."""

    def __init__(self, upstream: str, schedule: tuple[str, ...] = ("ok",),
                 stall_s: float = 2.0, port: int = 0):
        unknown = set(schedule) - set(ACTIONS)
        if unknown or not schedule:
            raise ValueError(f"schedule actions must be among {ACTIONS}, got {schedule}")
        self.upstream = urlsplit(upstream)
        self.schedule, self.stall_s = tuple(schedule), stall_s
        self.requests: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def action(self, path: str) -> str:
        """The scheduled action for this request (`METHOD /path`); counted."""
        with self._lock:
            count = self.requests[path]
            self.requests[path] += 1
            action = self.schedule[count % len(self.schedule)]
            if action != "ok":
                self.faults[action] += 1
            return action

    @property
    def injected(self) -> int:
        return sum(self.faults.values())

    def summary(self) -> dict[str, dict[str, int]]:
        """Requests seen per method, and faults injected per action."""
        methods: Counter[str] = Counter()
        for path, count in self.requests.items():
            methods[path.split(" ", 1)[0]] += count
        return {"requests": dict(methods), "faults": dict(self.faults)}


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _forward(self) -> tuple[int, str, list[tuple[str, str]], bytes]:
            body = self._body()
            connection = http.client.HTTPConnection(proxy.upstream.hostname,
                                                    proxy.upstream.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            connection.close()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, response.reason, kept, payload

        def _reset(self) -> None:
            """Close with a TCP RST (SO_LINGER 0) rather than a clean FIN."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _handle(self) -> None:
            action = proxy.action(f"{self.command} {urlsplit(self.path).path}")
            if action == "stall":
                self._body()
                time.sleep(proxy.stall_s)
                self.close_connection = True
                return
            if action == "503":
                self._body()
                payload = b"" if self.command == "HEAD" else SLOW_DOWN
                self.send_response(503, "Slow Down")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(SLOW_DOWN)))
                self.end_headers()
                self.wfile.write(payload)
                return
            status, reason, headers, payload = self._forward()
            self.send_response(status, reason)
            for key, value in headers:
                self.send_header(key, value)
            if action == "reset" and self.command != "HEAD" and len(payload) > 1:
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self._reset()
                return
            if action == "reset":  # no body to cut short: cut the headers short
                self.wfile.write(b"".join(self._headers_buffer)[:20])
                self.wfile.flush()
                self._reset()
                return
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

    return Handler


def main() -> None:
    """Serve until SIGTERM, then print the summary (one JSON line) for the caller to read."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream")
    parser.add_argument("port", type=int)
    parser.add_argument("--schedule", default="ok", help="comma-separated actions")
    parser.add_argument("--stall-s", type=float, default=2.0)
    args = parser.parse_args()
    proxy = FaultProxy(args.upstream, tuple(args.schedule.split(",")), args.stall_s,
                       port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with proxy:
            proxy._thread.join()
    finally:
        print(json.dumps(proxy.summary()), flush=True)


if __name__ == "__main__":
    main()
