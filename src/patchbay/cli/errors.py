"""How the CLI fails: its exit codes, and :class:`CliError`, a failure reported as one line on stderr."""

from __future__ import annotations

from patchbay.errors import (
    ConfigError,
    DuplicateServerError,
    PatchbayError,
    UnknownProfileError,
    UnknownServerError,
    UnknownToolError,
)

EXIT_OK = 0

EXIT_FAILED = 1

EXIT_USAGE = 2

EXIT_UNREACHABLE = 3

EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure reported as one line on stderr, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def exit_code_for(exc: PatchbayError) -> int:
    """Wrong input (names, config) is a usage error; everything else is a failed operation."""
    if isinstance(
        exc, ConfigError | UnknownServerError | UnknownToolError | DuplicateServerError | UnknownProfileError
    ):
        return EXIT_USAGE
    return EXIT_FAILED
