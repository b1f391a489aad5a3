"""``auth.oauth``, the resource server's settings: validated, placeholders expanded.

Kept apart from :mod:`patchbay.access.resource_server` so that ``config check`` validates them without
importing what verifies tokens (PyJWT, cryptography, httpx2).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from patchbay.config import HubConfig, error_message, expand, field_path, placeholder_env
from patchbay.errors import ConfigError
from patchbay.identity import Role

DEFAULT_ALGORITHMS = ("RS256", "ES256", "PS256", "EdDSA")
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K", "ES384", "ES512", "EdDSA"}
)
SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})


def _check_url(value: str, what: str) -> str:
    """An absolute https URL, or http on a loopback address (a local identity provider, tests)."""
    parts = urlsplit(value)
    loopback = (parts.hostname or "") in ("127.0.0.1", "::1", "localhost")
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise ValueError(f"{what} must be an https:// URL (http:// only on loopback), got {value!r}")
    if parts.fragment or parts.query:
        raise ValueError(f"{what} must have no query or fragment, got {value!r}")
    return value


class OAuthResourceConfig(BaseModel):
    """``auth.oauth`` as written (secrets as ``${VAR}`` placeholders, expanded later)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    issuer: str = Field(description="the identity provider's issuer identifier (tokens' iss)")
    audience: list[str] | None = Field(
        default=None, description="accepted aud values; by default the resource (patchbay's /mcp URL)"
    )
    resource: str | None = Field(default=None, description="patchbay's /mcp URL as clients reach it")
    roles_claim: str | None = Field(default=None, alias="rolesClaim")
    profile_claim: str | None = Field(default=None, alias="profileClaim")
    scopes: dict[str, Role] = Field(default_factory=dict)
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    secret: str | None = Field(default=None, description="the shared key for HS256/384/512 tokens")
    jwks_uri: str | None = Field(default=None, alias="jwksUri")
    introspection_url: str | None = Field(default=None, alias="introspectionUrl")
    client_id: str | None = Field(default=None, alias="clientId")
    client_secret: str | None = Field(default=None, alias="clientSecret")
    leeway: float = Field(default=10.0, ge=0, le=300, description="seconds of clock skew allowed")
    introspection_cache_seconds: float = Field(default=30.0, ge=0, le=3600, alias="introspectionCacheSeconds")
    jwks_min_refresh_seconds: float = Field(default=30.0, ge=0, le=86400, alias="jwksMinRefreshSeconds")

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("issuer", "resource", "jwks_uri", "introspection_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        if value is None or "$" in value:
            return value
        return _check_url(value, "the URL")

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one algorithm")
        for alg in value:
            if alg.lower() == "none":
                raise ValueError("'none' is never accepted: unsigned tokens prove nothing")
            known = ASYMMETRIC_ALGORITHMS | SYMMETRIC_ALGORITHMS
            if alg not in known:
                raise ValueError(f"unknown algorithm {alg!r}; one of {sorted(known)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OAuthResourceConfig:
        if not self.roles_claim and not self.scopes:
            raise ValueError(
                "give 'scopes' (scope → role, e.g. {\"mcp:read\": \"user\"}) or 'rolesClaim': "
                "without either no token could be given a role"
            )
        if any(alg in SYMMETRIC_ALGORITHMS for alg in self.algorithms) and not self.secret:
            raise ValueError("HS256/HS384/HS512 need 'secret' (the key shared with the identity provider)")
        if self.introspection_url and not (self.client_id and self.client_secret):
            raise ValueError("'introspectionUrl' needs 'clientId' and 'clientSecret' (patchbay's own)")
        return self


def resource_server_config(config: HubConfig, *, expand_env: bool = True) -> OAuthResourceConfig | None:
    """``auth.oauth`` validated, placeholders expanded (``expand_env=False``: the shape only, as ``config
    check`` wants it where the variables are not set); None when absent. ``ConfigError`` names the field."""
    auth = config.document.get("auth")
    raw = auth.get("oauth") if isinstance(auth, dict) else None
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError('auth.oauth must be an object, e.g. {"issuer": ...}', field="auth.oauth")
    try:
        parsed = OAuthResourceConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = field_path(err["loc"])
        field = f"auth.oauth.{where}" if where else "auth.oauth"
        raise ConfigError(f"{field}: {error_message(err)}", field=field) from None
    if not expand_env:
        return parsed
    env = placeholder_env(config.base_dir)
    values: dict[str, Any] = {}
    urls = ("issuer", "resource", "jwks_uri", "introspection_url")
    for name in (*urls, "client_id", "client_secret", "secret"):
        value = getattr(parsed, name)
        if isinstance(value, str) and "$" in value:
            alias = OAuthResourceConfig.model_fields[name].alias or name
            try:
                values[name] = expand(value, env, server="auth", field=f"oauth.{alias}")
            except ConfigError as exc:
                field = f"auth.oauth.{alias}"
                raise ConfigError(str(exc).replace("server 'auth': ", "auth."), field=field) from None
            if name in urls:
                try:
                    _check_url(values[name], "the URL")
                except ValueError as exc:
                    raise ConfigError(f"auth.oauth.{alias}: {exc}", field=f"auth.oauth.{alias}") from None
    return parsed.model_copy(update=values) if values else parsed
