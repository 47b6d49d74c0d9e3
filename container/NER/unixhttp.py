"""HTTP over a Unix socket: how serve checks that a worker answers, and how a fan-out
coordinator sends parts to gunicorn's socket (fanout.py)."""

import http.client
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client's connection, to the Unix socket at `path` instead of a host."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)
