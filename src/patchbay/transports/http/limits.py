"""The tunables of remote upstreams in one place, read at use (``limits.READ_TIMEOUT``) so tests can patch."""

from __future__ import annotations

CONNECT_TIMEOUT = 10.0  # seconds to establish a TCP/TLS connection
WRITE_TIMEOUT = 30.0  # seconds to send a request (and to wait for a pooled connection)
READ_TIMEOUT = 300.0  # seconds of silence on a response stream before it counts as broken
KEEPALIVE_EXPIRY = 2.0  # below the usual 5 s server keep-alive, so a reused connection is rarely stale
MAX_SSE_EVENT_BYTES = 64 * 1024 * 1024  # one message; the SDK default (1 MiB) is too small for big results
OPEN_TIMEOUT = 30.0  # bound on start() (the SSE transport waits for the ``endpoint`` event)
PROBE_TIMEOUT = 10.0  # a live server answers ``ping`` at once
CLOSE_GRACE = 2.0  # time to leave the SDK context politely (DELETE of the session) before cancelling
OUTBOX_LIMIT = 1024  # messages queued for the connection task; past that a send fails at once
