"""permessage-deflate for an agent's socket that leaves short messages uncompressed, at both ends.

Why: a ``tools/call`` request or answer is ~100 bytes; compressing it saves nothing on the wire and costs
each end a zlib call per message (measured by bench/agents.py: the hub's side alone ~30 µs a call). RFC 7692
lets a sender choose per message: a message sent as it is simply has RSV1 unset, and every receiver (old
agents and hubs, any library) reads it as it is. Listings and large results are still compressed, and
skipping a message leaves both compression contexts untouched. The negotiation is the library's own,
unchanged, so either end may be an older patchbay.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.typing import ExtensionParameter

log = logging.getLogger(__name__)

COMPRESS_MIN = 1024  # messages shorter than this many bytes are sent uncompressed


class SmallFramesPlain(PerMessageDeflate):
    """``PerMessageDeflate`` that sends whole messages shorter than ``COMPRESS_MIN`` uncompressed."""

    def encode(self, frame: Frame) -> Frame:
        if frame.fin and frame.opcode in (Opcode.TEXT, Opcode.BINARY) and len(frame.data) < COMPRESS_MIN:
            return frame
        return super().encode(frame)


def _plain_small(ext: PerMessageDeflate) -> SmallFramesPlain:
    return SmallFramesPlain(
        ext.remote_no_context_takeover,
        ext.local_no_context_takeover,
        ext.remote_max_window_bits,
        ext.local_max_window_bits,
        ext.compress_settings,
    )


class ClientDeflate(ClientPerMessageDeflateFactory):
    """The agent's offer: the library's default (``compression="deflate"``), for ``SmallFramesPlain``."""

    def __init__(self) -> None:
        super().__init__(compress_settings={"memLevel": 5})

    def process_response_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> PerMessageDeflate:
        return _plain_small(super().process_response_params(params, accepted_extensions))


class ServerDeflate(ServerPerMessageDeflateFactory):
    """The hub's answer: uvicorn's settings (12-bit windows, memLevel 5), negotiating ``SmallFramesPlain``."""

    def __init__(self) -> None:
        super().__init__(
            server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
        )

    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        response, ext = super().process_request_params(params, accepted_extensions)
        return response, _plain_small(ext)


def hub_ws_protocol() -> Any:
    """What ``patchbay serve`` gives uvicorn as ``ws``: its sans-I/O WebSocket protocol with
    ``ServerDeflate`` in place of the stock factory, or ``"websockets-sansio"`` itself if this uvicorn's
    internals are not the ones this was written against (then short messages are compressed, as before)."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # pragma: no cover (uvicorn without the sans-I/O implementation)
        return "websockets-sansio"

    class HubWebSocketProtocol(WebSocketsSansIOProtocol):
        def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            conn = getattr(self, "conn", None)
            if config.ws_per_message_deflate and conn is not None and hasattr(conn, "available_extensions"):
                conn.available_extensions = [ServerDeflate()]

    return HubWebSocketProtocol
