"""A throwaway MariaDB server (Debian's mariadb-server) for the tests and the benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MariaDBServer:
    """A throwaway mariadbd on 127.0.0.1; restartable on the same port and data directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mariadb-test-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = open(self.dir / "server.log", "ab")
        subprocess.run(
            [
                shutil.which("mariadb-install-db") or "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.dir / 'data'}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ],
            check=True,
            stdout=self.log,
            stderr=self.log,
        )
        self.start()
        import pymysql

        conn = pymysql.connect(unix_socket=str(self.dir / "sock"), user="root", autocommit=True)
        with conn.cursor() as cur:
            cur.execute("CREATE USER 'test'@'%' IDENTIFIED BY 'test'")
            cur.execute("GRANT ALL ON *.* TO 'test'@'%'")
        conn.close()
        self.url = f"mysql://test:test@127.0.0.1:{self.port}/"

    def start(self) -> None:
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.process = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={self.dir / 'data'}",
                f"--socket={self.dir / 'sock'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-name-resolve",
                f"--pid-file={self.dir / 'pid'}",
                "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=500",
                "--skip-log-bin",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while not self._accepts_connections():
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not accept connections in 60 s; see {self.dir / 'server.log'}")
            time.sleep(0.1)

    def close(self) -> None:
        """Stop the server and delete its data."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _accepts_connections(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"mariadbd exited; see {self.dir / 'server.log'}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0


def mariadb_available() -> bool:
    return bool(shutil.which("mariadb-install-db")) and (
        bool(shutil.which("mariadbd")) or Path("/usr/sbin/mariadbd").exists()
    )
