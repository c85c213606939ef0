"""The smallest create endpoint there is: reads a `POST /v1/messages/batches` body to the
end, throws it away and answers with a batch (and a count_tokens call with a quarter of its bytes in tokens).
Benchmarks send the submit paths here, so their times are the client's own work, not a
server's parsing.

    python -m bench.sink [--port N]"""

from __future__ import annotations

import argparse
import json
import socket
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # The headers and the body go out in two writes: without this, the second waits for
        # the client's delayed ACK of the first (some 40 ms a response on loopback).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        left = size = int(self.headers.get("Content-Length", "0"))
        while left:
            data = self.rfile.read(min(CHUNK, left))
            if not data:
                break
            left -= len(data)
        if self.path.startswith("/v1/messages/count_tokens"):  # the estimate's counts, before the create
            # In step with the request's size, as the API's counts are with its content.
            self._answer(json.dumps({"input_tokens": max(1, size // 4)}).encode())
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = json.dumps(
            {
                "id": f"msgbatch_sink{uuid.uuid4().hex[:20]}",
                "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": {"processing": 1, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
                "ended_at": None,
                "created_at": now,
                "expires_at": now,
                "archived_at": None,
                "cancel_initiated_at": None,
                "results_url": None,
            }
        ).encode()
        self._answer(body)

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    print(f"sink listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
