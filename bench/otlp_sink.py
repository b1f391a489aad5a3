"""An OTLP/HTTP sink for the tracing benchmark rows: answers every export with 200 and counts the bytes.

Run in a process of its own (``python -m bench.otlp_sink PORT``), like a real collector, so its work does
not land on the process being measured; the exporter's own work (encoding, the POST) does, as it should.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
