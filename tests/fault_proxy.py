"""A TCP proxy between a MySQL client and the server that injects faults on cue, for tests/test_faults.py.

    proxy = FaultProxy("127.0.0.1", 3306)
    url = proxy.url("dbname")                          # give this DATABASE_URL to the process under test
    proxy.cut_at_commit(b"SET lockedAt", down_for=4)   # the next COMMIT of a transaction that sent that text
                                                       # reaches the server; its answer is swallowed, the
                                                       # connection cut, and the proxy refuses all for 4 s

It reads the client's MySQL packets (3-byte length, sequence number, command byte; COM_QUERY is 3) to
see each statement, so it works with any client that does not use TLS or compression (PyMySQL's default).
"""

from __future__ import annotations

import socket
import threading
import time


class Connection:
    """One client connection and its server side, pumped by two threads."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket):
        self.proxy = proxy
        self.client = client
        self.server = server
        self.marked = False  # the current transaction sent the proxy's marker text
        self.swallow = False  # the next answer from the server is dropped and both sides cut
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def pump_client(self) -> None:
        buffer = b""
        try:
            while chunk := self.client.recv(65536):
                buffer += chunk
                while len(buffer) >= 4 and len(buffer) >= 4 + int.from_bytes(buffer[:3], "little"):
                    size = 4 + int.from_bytes(buffer[:3], "little")
                    packet, buffer = buffer[:size], buffer[size:]
                    self.inspect(packet[4:])
                    self.server.sendall(packet)
        except OSError:
            pass
        self.close()

    def inspect(self, payload: bytes) -> None:
        if payload[:1] != b"\x03":  # not COM_QUERY
            return
        sql = payload[1:].strip().upper()
        if self.proxy.cut_marker is not None and self.proxy.cut_marker.upper() in sql:
            self.proxy.cut_marker = None
            self.proxy.cuts += 1
            self.proxy.go_down()
            raise OSError("cut before the statement reached the server")
        marker = self.proxy.marker
        if sql.startswith((b"START TRANSACTION", b"BEGIN")):
            self.marked = False
        elif marker is not None and marker.upper() in sql:
            self.marked = True
        elif sql == b"COMMIT" and self.marked and marker is not None:
            self.proxy.marker = None  # one cut per cue
            self.swallow = True

    def pump_server(self) -> None:
        try:
            while chunk := self.server.recv(65536):
                if self.swallow:  # the server answered the COMMIT: it is done; the client never hears
                    self.proxy.cuts += 1
                    self.proxy.go_down()
                    break
                self.client.sendall(chunk)
        except OSError:
            pass
        self.close()


class FaultProxy:
    """Listens on a free loopback port and relays to (host, port); see the module docstring."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.marker: bytes | None = None
        self.cut_marker: bytes | None = None
        self.down_for = 0.0
        self.down_until = 0.0
        self.cuts = 0
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_forever, daemon=True).start()

    def url(self, database: str, user: str = "test", password: str = "test") -> str:
        return f"mysql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def cut_at_commit(self, marker: bytes, down_for: float = 0.0) -> None:
        """Cut the connection at the COMMIT of the next transaction that sent `marker`; then refuse all for down_for s."""
        self.down_for = down_for
        self.marker = marker

    def cut_at(self, marker: bytes, down_for: float = 0.0) -> None:
        """Cut the connection at the next statement that contains `marker`, before it reaches the server; then
        refuse all for down_for s."""
        self.down_for = down_for
        self.cut_marker = marker

    def is_down(self) -> bool:
        return time.monotonic() < self.down_until

    def go_down(self) -> None:
        """Cut every connection and refuse new ones for down_for seconds."""
        self.down_until = time.monotonic() + self.down_for
        with self._lock:
            connections, self.connections = self.connections, []
        for connection in connections:
            connection.close()

    def close(self) -> None:
        self.listener.close()
        self.go_down()

    def _accept_forever(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_down():
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            connection = Connection(self, client, server)
            with self._lock:
                self.connections.append(connection)
            threading.Thread(target=connection.pump_client, daemon=True).start()
            threading.Thread(target=connection.pump_server, daemon=True).start()
