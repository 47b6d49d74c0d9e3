"""The multi-model manager's HTTP front: its five requests (manager.py) on a Unix socket.

nginx proxies /models and /models/<name> here. A thread per request, so that a load
that waits for its model never holds up another request.
"""

import http.server
import logging
import os
import socket
import socketserver

from manager import Manager
from protocol import ApiError, dumps, error_body

log = logging.getLogger("ner.manager")


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "ner-models"
    sys_version = ""

    server: "ManagerServer"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, answer = self.server.manager.handle(self.command, self.path, body)
        except ApiError as e:
            status, answer = e.status, e.body()
        except Exception:  # a bug of ours: logged, answered, the manager goes on
            log.exception("unexpected error in %s %s", self.command, self.path)
            status, answer = 500, error_body("internal_error", "see the container log")
        data = dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _answer

    def address_string(self) -> str:
        return "nginx"  # a Unix socket's peer has no address

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s", format % args)


class ManagerServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """The manager's HTTP server on a Unix socket; a thread per request."""

    address_family = socket.AF_UNIX
    daemon_threads = True

    def __init__(self, path: str, manager: Manager):
        self.manager, self.path = manager, path
        # typeshed types the address as (host, port); a Unix socket's is its path.
        super().__init__(path, Handler)  # type: ignore[arg-type]

    def server_bind(self) -> None:
        # HTTPServer's own would look up a host name in a Unix path.
        socketserver.TCPServer.server_bind(self)
        os.chmod(self.path, 0o666)  # nginx's workers run as nobody
        self.server_name, self.server_port = "localhost", 0
