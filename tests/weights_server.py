"""A loopback HTTP server for download tests: serves a folder, misbehaves on request.

    with WeightsServer(official_weights) as server:
        server.script(Fault.DROP_MID_BODY, Fault.OK)      # first request drops, second is fine
        url = server.url_for("BSRN/net_g_BSRN_x4.pth")
        ...
        assert [r.range for r in server.requests] == [None, "bytes=720896-"]

Faults are consumed one per request, in order; once the script runs out every request gets
``server.default`` (Fault.OK unless changed). ``ranges`` says how the server treats Range requests:
"supported" (Accept-Ranges: bytes, 206 answers), "absent" (no Accept-Ranges, Range ignored, like
many simple static servers) or "ignored" (advertises Accept-Ranges but still answers 200 in full).
"""

from __future__ import annotations

import enum
import hashlib
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse


class Fault(enum.Enum):
    OK = "ok"
    DROP_MID_BODY = "drop mid body"
    """Announce the full length, send half, close the connection."""
    LONG_LENGTH = "Content-Length too large"
    """Announce 1000 bytes more than the file, send the file, close."""
    SHORT_LENGTH = "Content-Length too small"
    """Announce 1000 bytes fewer than the file and send only that many."""
    CORRUPT_BODY = "corrupted body"
    """Right length, but some bytes in the middle flipped."""
    STALL = "stall"
    """Say nothing for `stall_seconds` before answering (longer than the client's timeout)."""
    STALL_MID_BODY = "stall mid body"
    """Send half the body, then go silent for `stall_seconds`."""
    THROTTLE = "throttle"
    """Send the body slowly (in 16 pieces over `throttle_seconds`): makes downloads overlap."""
    ERROR_500 = "500"
    ERROR_503_RETRY_AFTER = "503 with Retry-After: 0"
    NOT_FOUND = "404"


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None
    status: int
    fault: Fault


class WeightsServer:
    def __init__(self, root: Path, *, ranges: Literal["supported", "absent", "ignored"] = "supported",
                 stall_seconds: float = 3.0, throttle_seconds: float = 0.4) -> None:
        self.root = Path(root)
        self.ranges = ranges
        self.stall_seconds = stall_seconds
        self.throttle_seconds = throttle_seconds
        self.default = Fault.OK
        self._script: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self.stopping = threading.Event()  # wakes stalled handlers when the server shuts down
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        # a short poll interval: shutdown() waits for it, once per test
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url_for(self, relative: str) -> str:
        return f"{self.url}/{relative}"

    def script(self, *faults: Fault) -> None:
        with self._lock:
            self._script.extend(faults)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, relative: str) -> list[Request]:
        return [r for r in self.requests if r.path == "/" + relative]

    def next_fault(self) -> Fault:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def __enter__(self) -> "WeightsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler_for(server: WeightsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            fault = server.next_fault()
            relative = unquote(urlparse(self.path).path).lstrip("/")
            file = (server.root / relative).resolve()
            wanted_range = self.headers.get("Range")
            if fault is Fault.STALL and server.stopping.wait(server.stall_seconds):
                return
            status = self._status(fault, file, server.root.resolve())
            if status != 200:
                server.record(Request(self.path, wanted_range, status, fault))
                self._send_error(status)
                return
            body = file.read_bytes()
            start = self._range_start(wanted_range, body)
            status = 206 if start is not None else 200
            server.record(Request(self.path, wanted_range, status, fault))
            self._send_body(fault, body, start or 0)

        def _status(self, fault: Fault, file: Path, root: Path) -> int:
            if fault is Fault.NOT_FOUND or not file.is_file() or root not in file.parents:
                return 404
            if fault is Fault.ERROR_500:
                return 500
            if fault is Fault.ERROR_503_RETRY_AFTER:
                return 503
            return 200

        def _range_start(self, wanted: str | None, body: bytes) -> int | None:
            if server.ranges != "supported" or not wanted or not wanted.startswith("bytes=") or not wanted.endswith("-"):
                return None
            if_range = self.headers.get("If-Range")
            if if_range is not None and if_range != _etag(body):
                return None  # the file changed since the client started: send it whole
            start = int(wanted[len("bytes="):-1])
            return start if 0 <= start < len(body) else None

        def _send_error(self, status: int) -> None:
            payload = f"error {status}\n".encode()
            self.send_response(status)
            if status == 503:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True

        def _send_body(self, fault: Fault, body: bytes, start: int) -> None:
            payload = body[start:]
            if fault is Fault.CORRUPT_BODY:
                middle = len(payload) // 2
                payload = payload[:middle] + bytes(b ^ 0xFF for b in payload[middle:middle + 64]) + payload[middle + 64:]
            announced = len(payload)
            if fault is Fault.LONG_LENGTH:
                announced += 1000
            if fault is Fault.SHORT_LENGTH:
                announced -= 1000
                payload = payload[:announced]
            self.send_response(206 if start else 200)
            if server.ranges != "absent":
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", _etag(body))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(announced))
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._write_payload(fault, payload)

        def _write_payload(self, fault: Fault, payload: bytes) -> None:
            half = len(payload) // 2
            try:
                if fault is Fault.DROP_MID_BODY:
                    self.wfile.write(payload[:half])
                elif fault is Fault.STALL_MID_BODY:
                    self.wfile.write(payload[:half])
                    self.wfile.flush()
                    if not server.stopping.wait(server.stall_seconds):
                        self.wfile.write(payload[half:])
                elif fault is Fault.THROTTLE:
                    piece = -(-len(payload) // 16)
                    for offset in range(0, len(payload), piece):
                        self.wfile.write(payload[offset:offset + piece])
                        self.wfile.flush()
                        if server.stopping.wait(server.throttle_seconds / 16):
                            return
                else:
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests): nothing to do

    return Handler


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
