"""One typed settings object from the environment (and `.env` in development).

It fails fast, naming the variable, because a mistyped setting in a security product should stop
the service at start-up rather than weaken it at 3 a.m.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ivr.errors import SettingsError


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    redis_url: str | None = Field(default=None, validation_alias=_env("REDIS_URL"))
    twilio_auth_token: str | None = Field(default=None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    flows_dir: Path = Field(default=Path("flows"), validation_alias=_env("IVR_FLOWS_DIR"))
    flow: str = Field(
        default="default", pattern=r"^[a-z][a-z0-9_-]{0,47}$", validation_alias=_env("IVR_FLOW")
    )
    pepper: str | None = Field(default=None, min_length=16, validation_alias=_env("IVR_PEPPER"))
    public_url: str | None = Field(
        default=None, pattern=r"^https?://[^/?#]+/?$", validation_alias=_env("IVR_PUBLIC_URL")
    )
    proxy_hops: Annotated[int, Field(ge=0, le=5)] = Field(
        default=0, validation_alias=_env("IVR_PROXY_HOPS")
    )
    session_ttl: Annotated[int, Field(ge=300, le=86400)] = Field(
        default=3600, validation_alias=_env("IVR_SESSION_TTL")
    )
    pin_min_length: Annotated[int, Field(ge=4, le=12)] = Field(
        default=6, validation_alias=_env("IVR_PIN_MIN_LENGTH")
    )
    account_max_failures: Annotated[int, Field(ge=1, le=100)] = Field(
        default=10, validation_alias=_env("IVR_ACCOUNT_MAX_FAILURES")
    )
    argon2_memory_kib: Annotated[int, Field(ge=1024, le=1048576)] = Field(
        default=19456, validation_alias=_env("IVR_ARGON2_MEMORY_KIB")
    )
    argon2_time_cost: Annotated[int, Field(ge=1, le=10)] = Field(
        default=2, validation_alias=_env("IVR_ARGON2_TIME_COST")
    )
    apology: str = Field(
        default="We are sorry, we cannot take your call right now. Please try again later, "
        "or sign in to our website. Goodbye.",
        validation_alias=_env("IVR_APOLOGY"),
    )

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value


ENV_NAMES = {
    name: field.validation_alias.choices[0]  # type: ignore[union-attr]
    for name, field in Settings.model_fields.items()
}
SECRET_VARIABLES = frozenset({"TWILIO_AUTH_TOKEN", "IVR_PEPPER"})


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; `overrides` (by field name) win, e.g. in tests."""
    unknown = set(overrides) - set(ENV_NAMES)
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
    try:
        return Settings(**{ENV_NAMES[name]: value for name, value in overrides.items()})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        name = ENV_NAMES.get(name, name)
        shown = "" if name in SECRET_VARIABLES else f" (got {first.get('input')!r})"
        raise SettingsError(f"{name}: {first['msg']}{shown}") from None
