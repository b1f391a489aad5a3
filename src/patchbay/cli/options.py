"""Option values from the command line, with errors that name the option: seconds, a JSON object,
``KEY=VALUE`` pairs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from patchbay.cli.errors import CliError
from patchbay.config import loads_strict


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def json_object(option: str, text: str, kind: str) -> dict[str, Any]:
    """The JSON object given to ``option``; ``kind`` completes "must be a JSON object …" in the error."""
    try:
        value = loads_strict(text)  # no NaN/Infinity: they could not be saved as standard JSON
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{option} is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(value, dict):
        raise CliError(f"{option} must be a JSON object {kind}, got {type(value).__name__}")
    return value


def key_value_pairs(items: Sequence[str] | None, what: str, *, header: bool = False) -> dict[str, str]:
    """``KEY=VALUE`` items (with ``header``, also ``Name: value``) as a dict; ``what`` names the option."""
    result: dict[str, str] = {}
    for item in items or ():
        if header and ":" in item and ("=" not in item or item.index(":") < item.index("=")):
            key, _, value = item.partition(":")
            value = value.strip()
        else:
            key, sep, value = item.partition("=")
            if not sep:
                raise CliError(f"{what} expects KEY=VALUE, got {item!r}")
        if not key.strip():
            raise CliError(f"{what} expects KEY=VALUE, got {item!r}")
        result[key.strip()] = value
    return result
