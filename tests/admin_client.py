"""A real admin server on a free loopback port, and a tiny HTTP client for the tests."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt

from admin_server import make_server
from db import Database
from scheduling import load_app
from settings import Settings

ADMIN_TOKEN = "test-admin-token-0123456789"
JWT_SECRET = "test-jwt-secret-" + "0123456789abcdef" * 4  # long enough for HS512 too


def admin_jwt(
    role: str = "ADMIN",
    expires_in: float = 600,
    sub: str = "alice@example.com",
    algorithm: str = "HS256",
    secret: str = JWT_SECRET,
) -> str:
    return jwt.encode({"sub": sub, "role": role, "exp": int(time.time() + expires_in)}, secret, algorithm=algorithm)


@dataclass
class Response:
    status: int
    headers: Any
    body: Any
    raw: bytes


class AdminServer:
    """make_server() from admin_server.py, serving on a thread until close()."""

    def __init__(self, database_url: str, **env: str):
        self.settings = Settings.from_env(
            {
                "DATABASE_URL": database_url,
                "SCHEDULES_MODULE": "definitions",
                "APP_ENV": "production",
                "HOST": "127.0.0.1",
                "PORT": "0",
                "ADMIN_TOKEN": ADMIN_TOKEN,
                "JWT_SECRET": JWT_SECRET,
                "HEARTBEAT_INTERVAL_MS": "1000",
                "LOCK_TIMEOUT_MS": "5000",
                **env,
            }
        )
        self.db = Database.from_url(database_url)
        self.app = load_app(self.settings.schedules_module, self.settings.environment)
        self.server = make_server(self.settings, self.db, self.app)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = ADMIN_TOKEN,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, response_headers, payload = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, response_headers, payload = error.code, error.headers, error.read()
        content_type = response_headers.get("Content-Type", "")
        parsed = json.loads(payload) if content_type.startswith("application/json") and payload else None
        return Response(status, response_headers, parsed, payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.db.close()
