"""A real HTTP receiver on a loopback port that records every request: the webhook and the ping monitor of the tests."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    body: Any


class Receiver:
    """Answers 200 to everything and keeps what it got, in arrival order."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.delay_s = 0.0  # a slow webhook: each answer waits this long
        receiver = self
        lock = threading.Lock()
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(receiver.delay_s)
                with lock:
                    requests.append(Received(self.command, self.path, json.loads(raw) if raw else None))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, event: str | None = None) -> list[dict[str, Any]]:
        return [
            r.body for r in list(self.requests) if r.method == "POST" and (event is None or r.body["event"] == event)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
