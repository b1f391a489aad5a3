"""The command implementations, one module per group of commands. Each ``cmd_*`` takes the parsed
arguments and returns the exit code; :mod:`patchbay.cli.parser` wires them to their command lines."""
