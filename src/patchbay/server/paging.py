"""Pages of ``/mcp``'s listings (tools, resources, templates, prompts) with ``nextCursor``.

A cursor is opaque to clients: base64url of the list kind, this endpoint's random nonce, the list's
*epoch* and an offset. The epoch changes whenever the ordered names of that list change (a server
re-listing the same names with new details keeps it), so a client following cursors gets every item exactly
once, or, if the list changed under it, a -32602 saying to list again from the start. A cursor from another
list, another endpoint (``/mcp/<profile>``) or another run of the hub is refused the same way; nothing
about a cursor can make the server fail.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")
MAX_CURSOR = 200  # characters: far more than any cursor given here


class CursorError(ValueError):
    """A cursor this endpoint cannot continue from; the message says why and what to do."""


@dataclass
class _List(Generic[_T]):
    key: Hashable
    items: Sequence[_T]
    names: list[str]
    epoch: int


@dataclass(frozen=True)
class Page(Generic[_T]):
    items: Sequence[_T]
    next_cursor: str | None
    # what identifies this page's content (for caches of its rendering)
    key: tuple[Hashable, int, int, str | None]


class Pager:
    """One endpoint's listings, each cached by a key (catalog version, view), and cut into pages."""

    def __init__(self) -> None:
        self._nonce = secrets.token_hex(4)
        self._lists: dict[str, _List[Any]] = {}

    def page(
        self,
        kind: str,
        key: Hashable,
        build: Callable[[], Sequence[_T]],
        name: Callable[[_T], str],
        cursor: str | None,
        size: int,
    ) -> Page[_T]:
        """The page of list ``kind`` at ``cursor`` (None: the first), ``size`` items (0: all the rest).

        ``build()`` makes the whole list when ``key`` changed since the last call; ``name`` gives each
        item's identity, so that the epoch moves only when the ordered identities change."""
        current: _List[_T] | None = self._lists.get(kind)
        if current is None or current.key != key:
            items = build()
            names = [name(i) for i in items]
            epoch = 0 if current is None else current.epoch + (names != current.names)
            current = self._lists[kind] = _List(key, items, names, epoch)
        start = 0 if cursor is None else self._offset(kind, current, cursor)
        end = len(current.items) if size <= 0 else min(start + size, len(current.items))
        next_cursor = self._cursor(kind, current.epoch, end) if end < len(current.items) else None
        return Page(current.items[start:end], next_cursor, (current.key, start, end, next_cursor))

    def items(self, kind: str) -> Sequence[Any]:
        """The whole list ``kind`` as last built (empty before its first page)."""
        current = self._lists.get(kind)
        return current.items if current is not None else ()

    def _cursor(self, kind: str, epoch: int, offset: int) -> str:
        raw = f"{kind}:{self._nonce}:{epoch}:{offset}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _offset(self, kind: str, current: _List[Any], cursor: str) -> int:
        try:
            if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR:
                raise ValueError
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
            what, nonce, epoch_s, offset_s = raw.split(":")
            epoch, offset = int(epoch_s), int(offset_s)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise CursorError(
                f"invalid cursor {cursor[:40]!r}: not a cursor this hub gave; list again without a cursor"
            ) from None
        if what != kind or nonce != self._nonce:
            raise CursorError(
                "invalid cursor: it belongs to another list, endpoint or run of this hub; list again "
                "without a cursor"
            )
        if epoch != current.epoch:
            raise CursorError(
                "stale cursor: the list changed since this cursor was given; list again without a cursor"
            )
        if not 0 < offset < len(current.items):
            raise CursorError("invalid cursor: it points outside the list; list again without a cursor")
        return offset
