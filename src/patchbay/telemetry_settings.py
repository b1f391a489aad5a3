"""Tracing settings: whether it is on and where spans go, from the config's ``telemetry`` key and the
standard ``OTEL_*`` variables.

Kept apart from :mod:`patchbay.telemetry` so that ``config check`` validates them without importing
OpenTelemetry and the web stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from patchbay.config import expand, placeholder_env, redact_url
from patchbay.errors import ConfigError

if TYPE_CHECKING:
    from patchbay.config import HubConfig

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"  # the OTLP/HTTP default
TRACES_PATH = "/v1/traces"
CONFIG_KEYS = frozenset({"enabled", "otlpEndpoint", "headers", "serviceName"})


@dataclass(frozen=True)
class TelemetrySettings:
    """Where spans go. ``endpoint`` None: the exporter reads the ``OTEL_EXPORTER_OTLP_*`` variables."""

    endpoint: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may hold credentials
    service_name: str | None = None
    why: str = ""  # what turned tracing on, for the start-up log line and error messages


def _env_true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _check_endpoint(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{where}: {redact_url(url)!r} is not an http:// or https:// URL "
            "(patchbay exports traces over OTLP/HTTP, e.g. http://localhost:4318)",
            field=where,
        )


def _traces_url(base: str) -> str:
    """``OTEL_EXPORTER_OTLP_ENDPOINT`` semantics: a base URL, ``/v1/traces`` appended."""
    base = base.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def settings_from(config: HubConfig, env: Mapping[str, str] | None = None) -> TelemetrySettings | None:
    """Whether tracing is on, and where spans go; None when off. Bad settings raise ``ConfigError``.

    The config key wins over the environment: ``"enabled": false`` turns tracing off whatever the variables
    say, and ``otlpEndpoint`` turns it on. ``OTEL_SDK_DISABLED=true`` turns it off in every case.
    """
    env = os.environ if env is None else env
    if _env_true(env.get("OTEL_SDK_DISABLED")):
        return None
    raw = config.document.get("telemetry")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            'telemetry must be an object, e.g. {"otlpEndpoint": "http://localhost:4318"}', field="telemetry"
        )
    unknown = sorted(set(raw) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(
            f"telemetry.{unknown[0]}: unknown key; the keys are {', '.join(sorted(CONFIG_KEYS))}",
            field=f"telemetry.{unknown[0]}",
        )
    enabled = raw.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise ConfigError("telemetry.enabled must be true or false", field="telemetry.enabled")
    if enabled is False:
        return None
    values = placeholder_env(config.base_dir)
    endpoint = _config_string(raw, "otlpEndpoint", values)
    service = _config_string(raw, "serviceName", values)
    headers = _config_headers(raw, values)
    if endpoint is not None:
        _check_endpoint(endpoint, "telemetry.otlpEndpoint")
        settings = TelemetrySettings(_traces_url(endpoint), headers, service, "telemetry.otlpEndpoint")
    else:
        why = _enabled_by_env(env)
        if why is None and enabled is not True:
            return None
        settings = TelemetrySettings(None, headers, service, why or "telemetry.enabled")
    _check_protocol(env)
    return settings


def _config_string(raw: dict[str, Any], key: str, values: Mapping[str, str]) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"telemetry.{key} must be a non-empty string", field=f"telemetry.{key}")
    return _expand(value, values, f"telemetry.{key}")


def _config_headers(raw: dict[str, Any], values: Mapping[str, str]) -> dict[str, str]:
    headers = raw.get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(
            'telemetry.headers must map header names to strings, e.g. {"Authorization": "Bearer ${TOKEN}"}',
            field="telemetry.headers",
        )
    return {k: _expand(v, values, f"telemetry.headers.{k}") for k, v in headers.items()}


def _expand(value: str, values: Mapping[str, str], where: str) -> str:
    try:
        return expand(value, values, server="telemetry", field=where)
    except ConfigError as exc:
        message = str(exc).replace(f"server 'telemetry': {where}", where)
        raise ConfigError(message, field=where) from None


def _enabled_by_env(env: Mapping[str, str]) -> str | None:
    """Which variable turns tracing on, if any; an exporter patchbay does not have is an error."""
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    unsupported = [e for e in exporters if e not in ("otlp", "none")]
    if unsupported:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={env['OTEL_TRACES_EXPORTER']!r}: patchbay exports traces with 'otlp' "
            "(OTLP/HTTP) only; use otlp, or none to turn tracing off",
            field="OTEL_TRACES_EXPORTER",
        )
    if exporters == ["none"]:
        return None
    for var in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if env.get(var, "").strip():
            _check_endpoint(env[var].strip(), var)
            return var
    return "OTEL_TRACES_EXPORTER" if "otlp" in exporters else None


def exporter_url(settings: TelemetrySettings, env: Mapping[str, str] | None = None) -> str:
    """The traces URL the exporter will use (for the log line)."""
    env = os.environ if env is None else env
    if settings.endpoint:
        return settings.endpoint
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].strip()
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return _traces_url(env["OTEL_EXPORTER_OTLP_ENDPOINT"].strip())
    return DEFAULT_ENDPOINT


def _check_protocol(env: Mapping[str, str]) -> None:
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(var, "").strip()
        if value:
            if value != "http/protobuf":
                raise ConfigError(
                    f"{var}={value!r}: patchbay exports traces over OTLP/HTTP with protobuf; "
                    "set it to http/protobuf (or unset it) and point the endpoint at the collector's "
                    "HTTP port (usually 4318)",
                    field=var,
                )
            return  # the traces-specific variable wins over the general one
