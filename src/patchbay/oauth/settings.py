"""The ``oauth`` object of a remote server's config entry, validated and with placeholders expanded.

It is read from the entry's extra keys (``ServerSpec`` keeps unknown keys), so this package needs no change
to the config model. Every field is optional and ``${VAR}``-expandable; secrets belong in variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from patchbay.config import ServerSpec, expand, placeholder_env
from patchbay.errors import ConfigError

Grant = Literal["authorization_code", "client_credentials"]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]


class OAuthSettings(BaseModel):
    """``"oauth": {...}`` of one remote server (camelCase in the file)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    client_id: str | None = Field(default=None, alias="clientId")
    client_secret: str | None = Field(default=None, alias="clientSecret", repr=False)
    client_metadata_url: str | None = Field(default=None, alias="clientMetadataUrl")
    scopes: list[str] | None = None
    grant: Grant = "authorization_code"
    token_endpoint_auth_method: AuthMethod | None = Field(default=None, alias="tokenEndpointAuthMethod")
    private_key: str | None = Field(default=None, alias="privateKey", repr=False)
    private_key_file: str | None = Field(default=None, alias="privateKeyFile")
    audience: str | None = None  # the ``aud`` of private_key_jwt assertions (default: the issuer)

    @property
    def auth_method(self) -> AuthMethod:
        """The token endpoint authentication to use: as configured, else implied by the credentials."""
        if self.token_endpoint_auth_method is not None:
            return self.token_endpoint_auth_method
        if self.private_key:
            return "private_key_jwt"
        if self.client_secret:
            return "client_secret_basic"
        return "none"


def raw_oauth(spec: ServerSpec) -> Any:
    """The ``oauth`` value as written (``None`` when absent), wherever the config model keeps it."""
    value = getattr(spec, "oauth", None)
    if value is None and spec.model_extra:
        value = spec.model_extra.get("oauth")
    return value


def oauth_settings(name: str, spec: ServerSpec, base_dir: Path | None = None) -> OAuthSettings | None:
    """The server's OAuth settings with placeholders expanded, ``None`` without an ``oauth`` key.

    Raises ``ConfigError`` naming the server and the field (``oauth.clientSecret``, ...).
    """
    raw = raw_oauth(spec)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"server {name!r}: oauth: expected an object", server=name, field="oauth")
    env = placeholder_env(base_dir)
    expanded: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            expanded[key] = expand(value, env, server=name, field=f"oauth.{key}")
        elif isinstance(value, list):
            expanded[key] = [
                expand(v, env, server=name, field=f"oauth.{key}[{i}]") if isinstance(v, str) else v
                for i, v in enumerate(value)
            ]
        else:
            expanded[key] = value
    key_file = expanded.get("privateKeyFile")
    if isinstance(key_file, str) and key_file and "privateKey" not in expanded:
        path = Path(key_file).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            expanded["privateKey"] = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"server {name!r}: oauth.privateKeyFile: cannot read {str(path)!r}: {exc.strerror or exc}",
                server=name,
                field="oauth.privateKeyFile",
            ) from None
    try:
        settings = OAuthSettings.model_validate(expanded)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"server {name!r}: oauth.{loc}: {err['msg']}", server=name, field=f"oauth.{loc}"
        ) from None
    if settings.auth_method == "private_key_jwt" and not settings.private_key:
        raise ConfigError(
            f"server {name!r}: oauth.privateKey: private_key_jwt needs privateKey or privateKeyFile",
            server=name,
            field="oauth.privateKey",
        )
    if settings.auth_method.startswith("client_secret") and not settings.client_secret:
        raise ConfigError(
            f"server {name!r}: oauth.tokenEndpointAuthMethod: {settings.auth_method} needs clientSecret",
            server=name,
            field="oauth.clientSecret",
        )
    if settings.grant == "client_credentials" and settings.auth_method == "none":
        raise ConfigError(
            f"server {name!r}: oauth.grant: client_credentials needs a confidential client "
            "(clientId with clientSecret or privateKey)",
            server=name,
            field="oauth.grant",
        )
    return settings
