"""The bundled demo MCP server, started by patchbay's default config.

It offers a handful of small, pure tools (time zones, arithmetic, text utilities,
ids) so that a fresh patchbay install has something real to route to. Nothing here
touches the network or writes to the filesystem.

Run it over stdio with ``python -m patchbay.demo``.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.metadata
import math
import operator
import random
import re
import unicodedata
import uuid as uuid_lib
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

__all__ = ["VERSION", "main", "server"]


def _version() -> str:
    try:
        return importlib.metadata.version("mcp-patchbay")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


VERSION = _version()

server: MCPServer = MCPServer(
    name="patchbay-demo",
    title="Patchbay demo tools",
    version=VERSION,
    instructions=(
        "Small, safe utility tools bundled with patchbay: current time and time-zone conversion, "
        "a safe calculator, text statistics and case conversion, slugs, hashes, UUIDs and random numbers. "
        "No tool uses the network or the filesystem."
    ),
)

# Every tool is a pure function of its arguments (or of the clock / a random source).
_PURE = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
_NONDETERMINISTIC = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)

# --------------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------------

TimezoneName = Annotated[
    str,
    Field(
        description=(
            "IANA time-zone name such as 'UTC', 'Europe/Berlin', 'America/New_York' or 'Asia/Tokyo'. "
            "Abbreviations like 'PST' or 'CET' are not reliable; use the Area/City form."
        ),
        min_length=1,
        max_length=64,
    ),
]


class TimeInfo(BaseModel):
    """A moment in time as seen in one time zone."""

    timezone: str = Field(description="IANA time-zone name.")
    datetime: str = Field(description="Local date and time in ISO 8601 format, with UTC offset.")
    weekday: str = Field(description="Day of the week, e.g. 'Monday'.")
    utc_offset: str = Field(description="Offset from UTC, e.g. '+02:00'.")
    is_dst: bool = Field(description="Whether daylight saving time is in effect.")


class TimeConversion(BaseModel):
    """The same moment in two time zones."""

    source: TimeInfo
    target: TimeInfo
    time_difference: str = Field(description="Target offset minus source offset, e.g. '+7h' or '-5.5h'.")


def _zone(name: str) -> zoneinfo.ZoneInfo:
    """Resolve an IANA zone name, or raise a ToolError that says how to fix it."""
    key = name.strip()
    try:
        return zoneinfo.ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    # Case-insensitive exact match first ("europe/paris"), then fuzzy suggestions.
    try:
        available = zoneinfo.available_timezones()
    except OSError:  # pragma: no cover - broken tz installation
        available = set()
    by_lower = {z.lower(): z for z in available}
    if key.lower() in by_lower:
        return zoneinfo.ZoneInfo(by_lower[key.lower()])
    suggestions = difflib.get_close_matches(key, sorted(available), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
    raise ToolError(
        f"Unknown time zone {name!r}.{hint} Use an IANA time-zone name in Area/City form, "
        "e.g. 'UTC', 'Europe/London', 'America/Los_Angeles', 'Asia/Kolkata' "
        "(full list: https://en.wikipedia.org/wiki/List_of_tz_database_time_zones)."
    )


def _format_offset(offset: timedelta | None) -> str:
    total = int((offset or timedelta()).total_seconds())
    sign = "+" if total >= 0 else "-"
    hours, rest = divmod(abs(total), 3600)
    return f"{sign}{hours:02d}:{rest // 60:02d}"


def _time_info(moment: datetime, zone: zoneinfo.ZoneInfo) -> TimeInfo:
    # Going through UTC normalizes wall-clock times that fall into a DST gap.
    local = moment.astimezone(UTC).astimezone(zone)
    return TimeInfo(
        timezone=zone.key,
        datetime=local.isoformat(timespec="seconds"),
        weekday=local.strftime("%A"),
        utc_offset=_format_offset(local.utcoffset()),
        is_dst=bool(local.dst()),
    )


@server.tool(title="Current time", annotations=_NONDETERMINISTIC)
def now(timezone: TimezoneName = "UTC") -> TimeInfo:
    """Get the current date and time in a time zone (ISO 8601, weekday, UTC offset, DST flag)."""
    zone = _zone(timezone)
    return _time_info(datetime.now(zone), zone)


_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


@server.tool(title="Convert time between time zones", annotations=_NONDETERMINISTIC)
def convert_time(
    time: Annotated[
        str,
        Field(
            description=(
                "Time to convert: 'HH:MM' (24-hour clock, today's date in from_timezone) or an ISO 8601 "
                "date-time such as '2025-03-30T14:30'. A date-time that carries its own UTC offset "
                "(e.g. '2025-03-30T14:30+01:00') is taken as that exact instant."
            ),
            min_length=1,
            max_length=64,
        ),
    ],
    from_timezone: TimezoneName,
    to_timezone: TimezoneName,
) -> TimeConversion:
    """Convert a time from one time zone to another, e.g. "What is 09:00 in Tokyo when it's in Berlin?"."""
    source_zone = _zone(from_timezone)
    target_zone = _zone(to_timezone)

    if match := _HHMM.match(time):
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise ToolError(f"Invalid time {time!r}: hours must be 0-23 and minutes/seconds 0-59.")
        moment = datetime.now(source_zone).replace(hour=hour, minute=minute, second=second, microsecond=0)
    else:
        try:
            moment = datetime.fromisoformat(time.strip())
        except ValueError:
            raise ToolError(
                f"Could not parse time {time!r}. Use 'HH:MM' (e.g. '14:30') or an ISO 8601 date-time "
                "(e.g. '2025-03-30T14:30' or '2025-03-30T14:30:00+01:00')."
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=source_zone)

    source = _time_info(moment, source_zone)
    target = _time_info(moment, target_zone)
    utc = moment.astimezone(UTC)
    delta = utc.astimezone(target_zone).utcoffset() or timedelta()
    delta -= utc.astimezone(source_zone).utcoffset() or timedelta()
    hours = delta.total_seconds() / 3600
    return TimeConversion(source=source, target=target, time_difference=f"{hours:+g}h")


# --------------------------------------------------------------------------------------------------
# Arithmetic
# --------------------------------------------------------------------------------------------------

Number = int | float

_MAX_EXPRESSION_LENGTH = 1000
_MAX_INT_BITS = 4096  # about 1233 decimal digits
_MAX_FACTORIAL = 1000


def _tidy(value: float) -> Number:
    """Return whole floats as ints (2.0 -> 2) so results read naturally."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


@server.tool(title="Add two numbers", annotations=_PURE)
def add(
    a: Annotated[float, Field(description="First number.")],
    b: Annotated[float, Field(description="Second number.")],
) -> Number:
    """Add two numbers and return the sum."""
    result = a + b
    if not math.isfinite(result):
        raise ToolError("The sum is not a finite number (overflow).")
    return _tidy(result)


class _CalcError(Exception):
    """An expression the calculator refuses or cannot evaluate; the message is shown to the caller."""


def _check(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise _CalcError("Result is too large (more than about 1200 digits).")
    if isinstance(value, float) and not math.isfinite(value):
        raise _CalcError("Result is not a finite number (overflow).")
    return value


def _power(base: Number, exponent: Number) -> Number:
    # Estimate the size of an integer power before computing it.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and abs(base) > 1
        and exponent * math.log2(abs(base)) > _MAX_INT_BITS
    ):
        raise _CalcError("Result is too large (more than about 1200 digits); use a smaller exponent.")
    result = base**exponent
    if isinstance(result, complex):
        raise _CalcError("Result is a complex number (fractional power of a negative number).")
    return result


def _factorial(n: Number) -> Number:
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if not isinstance(n, int) or n < 0:
        raise _CalcError("factorial() needs a non-negative whole number.")
    if n > _MAX_FACTORIAL:
        raise _CalcError(f"factorial() is limited to n <= {_MAX_FACTORIAL}.")
    return math.factorial(n)


def _round(x: Number, ndigits: Number = 0) -> Number:
    if not isinstance(ndigits, int):
        raise _CalcError("round() takes a whole number of digits, e.g. round(3.14159, 2).")
    return round(x, ndigits) if ndigits else round(x)


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}

_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}

_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "exp": math.exp,
    "abs": abs,
    "round": _round,
    "floor": math.floor,
    "ceil": math.ceil,
    "factorial": _factorial,
    "min": min,
    "max": max,
}

_SYMBOL = {
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
}


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise _CalcError(f"Only numbers are allowed, not {node.value!r}.")
        return _check(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            symbol = _SYMBOL.get(type(node.op), type(node.op).__name__)
            hint = " Use ** for powers." if symbol == "^" else ""
            raise _CalcError(f"Operator {symbol!r} is not supported.{hint}")
        left, right = _evaluate(node.left), _evaluate(node.right)
        if (
            isinstance(node.op, ast.Mult)
            and isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() + right.bit_length() > _MAX_INT_BITS + 1
        ):
            raise _CalcError("Result is too large (more than about 1200 digits).")
        return _check(op(left, right))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise _CalcError(f"Unknown name {node.id!r}. Allowed constants: {', '.join(_CONSTANTS)}.")
    if isinstance(node, ast.Call):
        allowed = ", ".join(_FUNCTIONS)
        if not isinstance(node.func, ast.Name):
            raise _CalcError(f"Only plain calls of these functions are allowed: {allowed}.")
        if node.func.id not in _FUNCTIONS:
            raise _CalcError(f"Unknown function {node.func.id!r}. Allowed functions: {allowed}.")
        if node.keywords:
            raise _CalcError("Keyword arguments are not supported in function calls.")
        args = [_evaluate(arg) for arg in node.args]
        try:
            return _check(_FUNCTIONS[node.func.id](*args))
        except TypeError:
            raise _CalcError(f"Wrong number of arguments for {node.func.id}().") from None
    if isinstance(node, ast.Compare | ast.BoolOp):
        raise _CalcError("Comparisons and boolean logic are not supported; only arithmetic.")
    raise _CalcError(f"Unsupported syntax: {type(node).__name__}. Only arithmetic expressions are allowed.")


class CalculationResult(BaseModel):
    expression: str = Field(description="The expression that was evaluated.")
    result: Number = Field(description="The numeric result.")


@server.tool(title="Calculator", annotations=_PURE)
def calculate(
    expression: Annotated[
        str,
        Field(
            description=(
                "Arithmetic expression, e.g. '(2 + 3) * 4', '2 ** 10', 'sqrt(2) / 2', 'round(pi * 3**2, 2)'. "
                "Operators: + - * / // % ** and parentheses. Constants: pi, e, tau. Functions: "
                + ", ".join(_FUNCTIONS)
                + ". Angles are in radians; log(x) is natural log, log(x, base) for another base."
            ),
            min_length=1,
            max_length=_MAX_EXPRESSION_LENGTH,
        ),
    ],
) -> CalculationResult:
    """Evaluate an arithmetic expression safely (no code execution) and return the number."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError(
            f"Could not parse {expression!r} as an arithmetic expression. Example: '(2 + 3) * 4 / 7'."
        ) from None
    try:
        result = _evaluate(tree)
    except _CalcError as exc:
        raise ToolError(str(exc)) from None
    except ZeroDivisionError:
        raise ToolError("Division by zero.") from None
    except OverflowError:
        raise ToolError("Result is too large (numeric overflow).") from None
    except ValueError as exc:  # math domain errors, e.g. sqrt(-1), log(0)
        raise ToolError(f"Math error: {exc} (e.g. sqrt or log of a negative number).") from None
    except RecursionError:
        raise ToolError("Expression is nested too deeply.") from None
    return CalculationResult(expression=expression.strip(), result=_tidy(result))


# --------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------

Text = Annotated[str, Field(description="The input text.")]


class TextStats(BaseModel):
    words: int = Field(description="Number of whitespace-separated words.")
    characters: int = Field(description="Number of characters, including spaces and line breaks.")
    characters_excluding_whitespace: int = Field(description="Number of non-whitespace characters.")
    lines: int = Field(description="Number of lines (0 for empty text).")


@server.tool(title="Count words", annotations=_PURE)
def word_count(text: Text) -> TextStats:
    """Count the words, characters and lines in a text."""
    return TextStats(
        words=len(text.split()),
        characters=len(text),
        characters_excluding_whitespace=sum(1 for ch in text if not ch.isspace()),
        lines=len(text.splitlines()),
    )


def _words(text: str) -> list[str]:
    """Split text into words, also at camelCase and digit boundaries ("parseHTTPResponse2" -> 4 words)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", text)
    spaced = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", " ", spaced)
    return re.findall(r"[^\W_]+", spaced)


@server.tool(title="Change letter case", annotations=_PURE)
def change_case(
    text: Text,
    case: Annotated[
        Literal["upper", "lower", "title", "snake", "camel", "kebab"],
        Field(
            description=(
                "Target case: upper ('HELLO WORLD'), lower ('hello world'), title ('Hello World'), "
                "snake ('hello_world'), camel ('helloWorld') or kebab ('hello-world')."
            )
        ),
    ],
) -> str:
    """Convert text to UPPER, lower, Title Case, snake_case, camelCase or kebab-case."""
    match case:
        case "upper":
            return text.upper()
        case "lower":
            return text.lower()
        case "title":
            return re.sub(r"\S+", lambda m: m[0][:1].upper() + m[0][1:].lower(), text)
        case "snake":
            return "_".join(w.lower() for w in _words(text))
        case "kebab":
            return "-".join(w.lower() for w in _words(text))
        case "camel":
            words = _words(text)
            return "".join(
                [w.lower() for w in words[:1]] + [w[:1].upper() + w[1:].lower() for w in words[1:]]
            )
    raise ToolError(f"Unknown case {case!r}.")  # pragma: no cover - the schema rejects it first


@server.tool(title="Make a URL slug", annotations=_PURE)
def slugify(
    text: Text,
    max_length: Annotated[int, Field(description="Maximum slug length.", ge=1, le=200)] = 80,
) -> str:
    """Turn text into a URL-friendly slug: lowercase ASCII letters and digits joined by hyphens."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:max_length].rstrip("-")
    if not slug:
        raise ToolError("The text contains no letters or digits that can be used in a slug.")
    return slug


@server.tool(title="Hash text", annotations=_PURE)
def hash_text(
    text: Annotated[str, Field(description="The text to hash (encoded as UTF-8).")],
    algorithm: Annotated[
        Literal["sha256", "sha1", "md5"],
        Field(description="Hash algorithm. sha1 and md5 are for checksums only, not for security."),
    ] = "sha256",
) -> str:
    """Compute the hexadecimal hash digest of a text (sha256, sha1 or md5)."""
    return hashlib.new(algorithm, text.encode("utf-8"), usedforsecurity=False).hexdigest()


# --------------------------------------------------------------------------------------------------
# Random
# --------------------------------------------------------------------------------------------------

_rng = random.SystemRandom()


class UuidList(BaseModel):
    uuids: list[str] = Field(description="The generated UUIDs in canonical 8-4-4-4-12 hex form.")


@server.tool(name="uuid", title="Generate UUIDs", annotations=_NONDETERMINISTIC)
def generate_uuids(
    count: Annotated[int, Field(description="How many UUIDs to generate (1-100).", ge=1, le=100)] = 1,
) -> UuidList:
    """Generate random version-4 UUIDs."""
    return UuidList(uuids=[str(uuid_lib.uuid4()) for _ in range(count)])


_RANDOM_LIMIT = 10**18


@server.tool(title="Random integer", annotations=_NONDETERMINISTIC)
def random_number(
    minimum: Annotated[
        int, Field(description="Smallest possible value (inclusive).", ge=-_RANDOM_LIMIT, le=_RANDOM_LIMIT)
    ],
    maximum: Annotated[
        int, Field(description="Largest possible value (inclusive).", ge=-_RANDOM_LIMIT, le=_RANDOM_LIMIT)
    ],
) -> int:
    """Pick a uniformly random integer between minimum and maximum, both inclusive."""
    if minimum > maximum:
        raise ToolError(f"minimum ({minimum}) must not be greater than maximum ({maximum}).")
    return _rng.randint(minimum, maximum)


# --------------------------------------------------------------------------------------------------
# Resource and prompt
# --------------------------------------------------------------------------------------------------


@server.resource(
    "demo://about",
    name="about",
    title="About the patchbay demo server",
    description="What this demo server is and which tools it offers.",
    mime_type="text/markdown",
)
async def about() -> str:
    """Describe the demo server."""
    tools = "\n".join(f"- `{t.name}`: {t.description}" for t in await server.list_tools())
    return (
        f"# patchbay-demo {VERSION}\n\n"
        "The demo MCP server bundled with patchbay and started by its default config. "
        "Its tools are small, pure and safe: no network access, no filesystem writes.\n\n"
        f"## Tools\n\n{tools}\n\n"
        "## Prompts\n\n- `summarize`: ask the model to summarize a text.\n\n"
        "Replace or extend it by listing your own servers under `mcpServers` in the patchbay config.\n"
    )


@server.prompt(title="Summarize a text")
def summarize(
    text: Annotated[str, Field(description="The text to summarize.")],
) -> str:
    """Ask the model for a concise summary of a text."""
    return (
        "Summarize the following text in a few sentences. Keep the key facts, names and numbers, "
        f"and do not add anything that is not in the text.\n\n---\n{text}\n---"
    )


def main() -> None:
    """Run the demo server over stdio."""
    server.run("stdio")
