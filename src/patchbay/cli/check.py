"""Validating a config file without starting anything (``config check``): every error, field by field, and
warnings for what would fail at start (unset placeholder variables, commands not found)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchbay.access.authorization_server.settings import server_settings
from patchbay.access.tokens import config_tokens, parse_entries
from patchbay.config import (
    HubConfig,
    ServerSpec,
    error_message,
    expand,
    field_path,
    loads_strict,
    parse_config,
    parse_server_spec,
    placeholder_env,
    profile_warnings,
    validate_server_name,
)
from patchbay.errors import ConfigError

_INPUT_RE = re.compile(r"\$\{input:([^}]*)\}")


def _problem(
    message: str, server: str | None = None, field: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {"server": server, "field": field, "message": message, **extra}


def _entry_errors(name: Any, entry: Any) -> list[dict[str, Any]]:
    """Every problem of one server entry, each naming the field (not just the first, as loading does)."""
    from pydantic import ValidationError

    try:
        validate_server_name(name)
    except ConfigError as exc:
        return [_problem(str(exc), str(name))]
    if not isinstance(entry, Mapping):
        return [_problem(f"server {name!r}: expected an object, got {type(entry).__name__}", name)]
    try:
        ServerSpec.model_validate(dict(entry))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = field_path(err["loc"]) or None
            msg = error_message(err)
            problems.append(_problem(f"server {name!r}: {loc + ': ' if loc else ''}{msg}", name, loc))
        return problems
    return []


def _spec_fields(spec: ServerSpec) -> list[tuple[str, str]]:
    """(field, value) of every value patchbay expands placeholders in."""
    fields: list[tuple[str, str]] = []
    if spec.command:
        fields.append(("command", spec.command))
    fields += [(f"args[{i}]", a) for i, a in enumerate(spec.args)]
    fields += [(f"env.{k}", v) for k, v in spec.env.items()]
    if spec.cwd:
        fields.append(("cwd", spec.cwd))
    if spec.url:
        fields.append(("url", spec.url))
    fields += [(f"headers.{k}", v) for k, v in spec.headers.items()]
    return fields


def _entry_warnings(name: str, spec: ServerSpec, base_dir: Path) -> list[dict[str, Any]]:
    """Missing placeholder variables (each field) and a command not found: what would fail at start."""
    env = placeholder_env(base_dir)
    warnings: list[dict[str, Any]] = []
    values: dict[str, str | None] = {}
    for fld, value in _spec_fields(spec):
        for m in _INPUT_RE.finditer(value):
            warnings.append(
                _problem(
                    f"server {name!r}: {fld}: ${{input:{m.group(1)}}} is a VS Code input prompt, which "
                    "patchbay cannot ask for; replace it with the value or a ${VARIABLE} placeholder",
                    name,
                    fld,
                )
            )
        try:
            values[fld] = expand(value, env, server=name, field=fld)
        except ConfigError as exc:
            values[fld] = None
            warnings.append(_problem(str(exc), name, fld))
    if spec.transport == "stdio" and values.get("command"):
        command = str(values["command"])
        path_var = os.environ.get("PATH")
        if "env.PATH" in values:
            path_var = values["env.PATH"] or path_var
        cwd = values.get("cwd")
        if cwd and not os.path.isabs(cwd):
            cwd = str((base_dir / cwd).resolve())
        found = shutil.which(command, path=path_var)
        if found is None and os.sep in command and cwd:
            found = command if os.access(os.path.join(cwd, command), os.X_OK) else None
        if found is None:
            warnings.append(
                _problem(
                    f"server {name!r}: command: {command!r} was not found on PATH or is not executable",
                    name,
                    "command",
                )
            )
    if not spec.is_enabled:
        for w in warnings:
            w["message"] += " (the server is disabled)"
    return warnings


def _oauth_problems(
    name: str, spec: ServerSpec, base_dir: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A remote server's ``oauth`` object: (errors, warnings). A wrong shape or value is an error; what
    only fails at start (an unset variable, an unreadable key file) is a warning, as for the other fields."""
    if getattr(spec, "oauth", None) is None and (spec.model_extra or {}).get("oauth") is None:
        return [], []  # no oauth (raw_oauth's rule): the OAuth package (and the MCP SDK under it) stays out
    from patchbay.oauth.settings import OAuthSettings, oauth_settings, raw_oauth

    raw = raw_oauth(spec)
    if raw is None:
        return [], []
    if not isinstance(raw, Mapping):
        return [_problem(f"server {name!r}: oauth: expected an object", name, "oauth")], []
    if spec.transport == "stdio":
        message = f"server {name!r}: oauth: only remote servers (url) sign in with OAuth"
        return [_problem(message, name, "oauth")], []
    from pydantic import ValidationError

    try:
        OAuthSettings.model_validate(dict(raw))  # the shape, before placeholders are expanded
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = "oauth." + ".".join(str(p) for p in err["loc"])
            problems.append(_problem(f"server {name!r}: {loc}: {error_message(err)}", name, loc))
        return problems, []
    try:
        oauth_settings(name, spec, base_dir)
    except ConfigError as exc:
        unset = "is not set" in str(exc) or "cannot read" in str(exc)
        problem = _problem(str(exc), name, exc.field)
        return ([], [problem]) if unset else ([problem], [])
    return [], []


def check_config(path: Path) -> dict[str, Any]:
    """Validate a config file: errors make it unusable, warnings are what would fail when it starts."""
    report: dict[str, Any] = {"path": str(path), "valid": False, "servers": [], "errors": [], "warnings": []}
    errors: list[dict[str, Any]] = report["errors"]
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        errors.append(_problem(f"{path}: config file not found"))
        return report
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(_problem(f"{path}: cannot read config file: {exc}"))
        return report
    try:
        doc = loads_strict(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        errors.append(
            _problem(
                f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}",
                line=exc.lineno,
                column=exc.colno,
            )
        )
        return report
    config: HubConfig | None = None
    try:
        config = parse_config(text, source=str(path), path=path.resolve())
    except ConfigError as exc:
        lines = str(exc).splitlines()
        if len(lines) > 1 and lines[0].endswith("invalid configuration:"):
            # per-server lines are reported below, field by field; keep the rest (agents, names)
            errors += [
                _problem(f"{path}: {line.strip()}")
                for line in lines[1:]
                if not line.strip().startswith(("server ", "invalid server name"))
            ]
        else:
            errors.append(_problem(str(exc)))
    key = next((k for k in ("mcpServers", "servers") if isinstance(doc, dict) and k in doc), "mcpServers")
    raw = doc.get(key) if isinstance(doc, dict) else None
    base_dir = path.resolve().parent
    if isinstance(raw, dict):
        report["servers"] = list(raw)
        for name, entry in raw.items():
            problems = _entry_errors(name, entry)
            errors += problems
            if not problems:
                spec = parse_server_spec(name, entry)
                oauth_errors, oauth_warnings = _oauth_problems(name, spec, base_dir)
                errors += oauth_errors
                report["warnings"] += _entry_warnings(name, spec, base_dir) + oauth_warnings
    if config is not None:
        try:
            parse_entries(config)  # names, roles, profiles: an error
        except ConfigError as exc:
            errors.append(_problem(str(exc), field=exc.field))
        else:
            try:
                config_tokens(config)  # an unset ${VARIABLE}: fails at start, so a warning here
            except ConfigError as exc:
                report["warnings"].append(_problem(str(exc), field=exc.field))
        auth = config.document.get("auth")
        if isinstance(auth, dict) and auth.get("oauth") is not None:  # else the HTTP/JWT stack stays out
            from patchbay.access.resource_settings import resource_server_config

            try:
                resource_server_config(config, expand_env=False)
            except ConfigError as exc:
                errors.append(_problem(str(exc), field=exc.field))
        traced = "telemetry" in config.document or any(k.startswith("OTEL_") for k in os.environ)
        try:  # the tracing settings (config key and OTEL_* variables) would stop the hub at start
            if traced:  # else nothing to check, and the tracing (and web) modules stay out
                from patchbay.telemetry_settings import settings_from

                settings_from(config)
        except ConfigError as exc:
            report["warnings"].append(_problem(str(exc), field=exc.field))
        try:
            server_settings(config)  # auth.server: the built-in authorization server
        except ConfigError as exc:
            errors.append(_problem(str(exc), field=exc.field))
        # servers come and go, so a profile naming an unknown one is a warning (likely a typo), not an error
        report["warnings"] += [_problem(w, field="profiles") for w in profile_warnings(config)]
    if isinstance(doc, dict):
        errors += _access_errors(doc, path.resolve())
    report["valid"] = not errors
    return report


def _access_errors(doc: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The top-level ``audit`` and ``rateLimits`` (serve refuses to start with either invalid)."""
    from patchbay.audit import parse_audit
    from patchbay.ratelimit import parse_rate_limits

    problems = []
    for validate in (lambda: parse_audit(doc, path), lambda: parse_rate_limits(doc)):
        try:
            validate()
        except ConfigError as exc:
            problems.append(_problem(str(exc), field=exc.field))
    return problems
