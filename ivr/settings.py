"""One typed settings object from the environment (and `.env` in development).

It fails fast, naming the variable, because a mistyped setting in a security product should stop
the service at start-up rather than weaken it at 3 a.m.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    FilePath,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from redis.connection import parse_url

from ivr.errors import SettingsError


def _default_flows() -> Path:
    """`./flows` when there is one, else the flows shipped beside the package (a checkout)."""
    here = Path("flows")
    shipped = Path(__file__).resolve().parent.parent / "flows"
    return here if here.is_dir() or not shipped.is_dir() else shipped


_HOST_NAME = re.compile(r"\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")

#: An origin a CSP frame-ancestors list may name: https, a host (any subdomain with `*.`), a port.
_FRAME_ORIGIN = re.compile(
    r"https://(\*\.)?" + _HOST_NAME.pattern.removeprefix(r"\.?") + r"(:[0-9]{1,5})?"
)


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
    flows_dir: Path = Field(
        default_factory=lambda: _default_flows(), validation_alias=_env("IVR_FLOWS_DIR")
    )
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
    # Host names this service answers to (comma-separated in the environment); see
    # ivr.security.served_hosts for what an empty list means.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), validation_alias=_env("IVR_ALLOWED_HOSTS")
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
    # Abuse limits (ivr.auth.abuse): failures allowed within the sliding window; one more trips.
    abuse_window: Annotated[int, Field(ge=60, le=86400)] = Field(
        default=3600, validation_alias=_env("IVR_ABUSE_WINDOW")
    )
    abuse_cooldown: Annotated[int, Field(ge=60, le=86400)] = Field(
        default=3600, validation_alias=_env("IVR_ABUSE_COOLDOWN")
    )
    abuse_number_failures: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=6, validation_alias=_env("IVR_ABUSE_NUMBER_FAILURES")
    )
    abuse_number_accounts: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3, validation_alias=_env("IVR_ABUSE_NUMBER_ACCOUNTS")
    )
    abuse_withheld_failures: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=30, validation_alias=_env("IVR_ABUSE_WITHHELD_FAILURES")
    )
    abuse_account_numbers: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3, validation_alias=_env("IVR_ABUSE_ACCOUNT_NUMBERS")
    )
    abuse_global_failures: Annotated[int, Field(ge=1, le=1000000)] = Field(
        default=300, validation_alias=_env("IVR_ABUSE_GLOBAL_FAILURES")
    )
    # One-time codes, service codes and their delivery (possession factors).
    code_key: str | None = Field(default=None, min_length=16, validation_alias=_env("IVR_CODE_KEY"))
    code_digits: Annotated[int, Field(ge=6, le=10)] = Field(
        default=6, validation_alias=_env("IVR_CODE_DIGITS")
    )
    code_ttl: Annotated[int, Field(ge=60, le=600)] = Field(
        default=600, validation_alias=_env("IVR_CODE_TTL")
    )
    send_limit_account: Annotated[int, Field(ge=1, le=50)] = Field(
        default=5, validation_alias=_env("IVR_SEND_LIMIT_ACCOUNT")
    )
    send_limit_destination: Annotated[int, Field(ge=1, le=50)] = Field(
        default=5, validation_alias=_env("IVR_SEND_LIMIT_DESTINATION")
    )
    send_limit_prefix: Annotated[int, Field(ge=1, le=100000)] = Field(
        default=200, validation_alias=_env("IVR_SEND_LIMIT_PREFIX")
    )
    send_window: Annotated[int, Field(ge=60, le=86400)] = Field(
        default=600, validation_alias=_env("IVR_SEND_WINDOW")
    )
    # Code requests (texts, emails, call backs, resends included) one call may make: a code
    # and a resend, or a switch of method, are enough for a customer; more make the call a tool
    # for SMS pumping or for flooding the customer's phone.
    code_requests_per_call: Annotated[int, Field(ge=1, le=10)] = Field(
        default=3, validation_alias=_env("IVR_CODE_REQUESTS_PER_CALL")
    )
    service_code_digits: Annotated[int, Field(ge=6, le=10)] = Field(
        default=8, validation_alias=_env("IVR_SERVICE_CODE_DIGITS")
    )
    service_code_ttl: Annotated[int, Field(ge=300, le=7 * 86400)] = Field(
        default=86400, validation_alias=_env("IVR_SERVICE_CODE_TTL")
    )
    api_token: str | None = Field(
        default=None, min_length=16, validation_alias=_env("IVR_API_TOKEN")
    )
    sms_backend: Literal["outbox", "twilio", "verify"] = Field(
        default="outbox", validation_alias=_env("IVR_SMS_BACKEND")
    )
    email_backend: Literal["outbox", "smtp", "verify"] = Field(
        default="outbox", validation_alias=_env("IVR_EMAIL_BACKEND")
    )
    call_backend: Literal["outbox", "twilio"] = Field(
        default="outbox", validation_alias=_env("IVR_CALL_BACKEND")
    )
    outbox: Path = Field(default=Path(".ivr/outbox.jsonl"), validation_alias=_env("IVR_OUTBOX"))
    twilio_account_sid: str | None = Field(
        default=None, pattern=r"^AC[0-9a-fA-F]{32}$", validation_alias=_env("TWILIO_ACCOUNT_SID")
    )
    sms_from: str | None = Field(
        default=None,
        pattern=r"^(\+[1-9][0-9]{6,14}|MG[0-9a-fA-F]{32})$",
        validation_alias=_env("IVR_SMS_FROM"),
    )
    caller_id: str | None = Field(
        default=None, pattern=r"^\+[1-9][0-9]{6,14}$", validation_alias=_env("IVR_CALLER_ID")
    )
    verify_service_sid: str | None = Field(
        default=None,
        pattern=r"^VA[0-9a-fA-F]{32}$",
        validation_alias=_env("TWILIO_VERIFY_SERVICE_SID"),
    )
    smtp_url: str | None = Field(
        default=None, pattern=r"^smtps?://", validation_alias=_env("IVR_SMTP_URL")
    )
    email_from: str | None = Field(default=None, validation_alias=_env("IVR_EMAIL_FROM"))
    brand: str = Field(default="Example Bank", max_length=40, validation_alias=_env("IVR_BRAND"))
    # The agent API's allow-list (ivr.auth.agent_policy); unset: <IVR_FLOWS_DIR>/agents.yaml.
    agent_policy: Path | None = Field(default=None, validation_alias=_env("IVR_AGENT_POLICY"))

    # Agents and risk signals (issue 7). With a TaskRouter workflow, a caller is enqueued as a
    # task carrying only the call's opaque reference, intent, assurance, methods and signals.
    taskrouter_workflow_sid: str | None = Field(
        default=None,
        pattern=r"^WW[0-9a-fA-F]{32}$",
        validation_alias=_env("IVR_TASKROUTER_WORKFLOW_SID"),
    )
    # Twilio Lookup of the number on file before an SMS code is sent (ivr.lookup).
    lookup: Literal["off", "on"] = Field(default="off", validation_alias=_env("IVR_LOOKUP"))
    lookup_ttl: Annotated[int, Field(ge=60, le=7 * 86400)] = Field(
        default=3600, validation_alias=_env("IVR_LOOKUP_TTL")
    )
    sim_swap_window: Annotated[int, Field(ge=3600, le=90 * 86400)] = Field(
        default=7 * 86400, validation_alias=_env("IVR_SIM_SWAP_WINDOW")
    )

    apology: str = Field(
        default="We are sorry, we cannot take your call right now. Please try again later, "
        "or sign in to our website. Goodbye.",
        validation_alias=_env("IVR_APOLOGY"),
    )
    # Origins (besides our own) that may frame the agent page, e.g. the Flex or CRM host;
    # space- or comma-separated in the environment.
    agent_frame_ancestors: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), validation_alias=_env("IVR_AGENT_FRAME_ANCESTORS")
    )

    # The browser phone (ivr.web.dev_phone, /dev/phone): only `ivr dev` turns it on, for its
    # own web process; anywhere else the page and its API are not served at all (404).
    dev_phone: bool = Field(default=False, validation_alias=_env("IVR_DEV_PHONE"))
    # Operations (issue 9, health and metrics): /metrics answers only a request bearing this
    # token (`Authorization: Bearer ...`), and is not served at all while it is unset; log lines
    # are text, or one JSON object each (ivr.logging_setup).
    metrics_token: str | None = Field(
        default=None, min_length=16, validation_alias=_env("IVR_METRICS_TOKEN")
    )
    log_format: Literal["text", "json"] = Field(
        default="text", validation_alias=_env("IVR_LOG_FORMAT")
    )

    # Managed Redis (issue 9): certificate checks for a rediss:// REDIS_URL. Heroku Redis, for
    # one, presents a self-signed certificate (none); others sign with a private CA (CA_CERTS).
    redis_ssl_cert_reqs: Literal["none", "optional", "required"] = Field(
        default="required", validation_alias=_env("IVR_REDIS_SSL_CERT_REQS")
    )
    redis_ssl_ca_certs: FilePath | None = Field(
        default=None, validation_alias=_env("IVR_REDIS_SSL_CA_CERTS")
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None  # REDIS_URL= is not set
        try:
            parse_url(value)  # redis-py's own parser: what every connection will do with it
        except ValueError as exc:
            if "://" not in value:
                raise ValueError(
                    "must start with redis://, rediss:// (TLS) or unix://; "
                    f"did you mean {masked_redis_url('redis://' + value)}?"
                ) from None
            raise ValueError(f"{exc}; e.g. redis://:password@host:6379/0") from None
        return value

    @field_validator("redis_ssl_cert_reqs", "redis_ssl_ca_certs")
    @classmethod
    def _only_over_tls(cls, value: object, info: ValidationInfo) -> object:
        url = info.data.get("redis_url")
        changed = value != cls.model_fields[str(info.field_name)].default
        if changed and url and not url.startswith("rediss://"):
            raise ValueError("applies only to a rediss:// (TLS) REDIS_URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("send_limit_destination", "send_limit_prefix")
    @classmethod
    def _not_below_the_account_cap(cls, value: int, info: ValidationInfo) -> int:
        # An unknown account has no destination or prefix to count: if either capped a lone
        # account sooner than its own cap, a refusal would tell a known account from an unknown.
        account = info.data.get("send_limit_account")
        if account is not None and value < account:
            raise ValueError(f"must be at least IVR_SEND_LIMIT_ACCOUNT ({account})")
        return value

    @field_validator("lookup")
    @classmethod
    def _lookup_has_an_account(cls, value: str, info: ValidationInfo) -> str:
        if value == "on":
            for name, variable in (
                ("twilio_account_sid", "TWILIO_ACCOUNT_SID"),
                ("twilio_auth_token", "TWILIO_AUTH_TOKEN"),
            ):
                if not info.data.get(name):
                    raise ValueError(f"IVR_LOOKUP=on needs {variable}")
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_names(cls, value: object) -> object:
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, list | tuple):
            return value
        hosts = tuple(str(name).strip().lower() for name in names if str(name).strip())
        for host in hosts:
            if not _HOST_NAME.fullmatch(host):
                raise ValueError(
                    f"{host!r} is not a host name; give names like ivr.example.com or "
                    ".example.com (any subdomain), comma-separated, with no scheme or port"
                )
        return hosts

    @field_validator("agent_frame_ancestors", mode="before")
    @classmethod
    def _frame_origins(cls, value: object) -> object:
        names = value.replace(",", " ").split() if isinstance(value, str) else value
        if not isinstance(names, list | tuple):
            return value
        origins = tuple(
            str(name).strip().lower().rstrip("/") for name in names if str(name).strip()
        )
        for origin in origins:
            if not _FRAME_ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an https origin; give origins like "
                    "https://flex.twilio.com or https://*.crm.example.com, with no path"
                )
        return origins


ENV_NAMES = {
    name: field.validation_alias.choices[0]  # type: ignore[union-attr]
    for name, field in Settings.model_fields.items()
}
SECRET_VARIABLES = frozenset(
    {"TWILIO_AUTH_TOKEN", "IVR_PEPPER", "IVR_CODE_KEY", "IVR_API_TOKEN", "IVR_SMTP_URL"}
)
SECRET_VARIABLES |= {"IVR_METRICS_TOKEN"}  # operations (issue 9)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; `overrides` (by field name) win, e.g. in tests."""
    unknown = set(overrides) - set(ENV_NAMES)
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
    return _validated(**{ENV_NAMES[name]: value for name, value in overrides.items()})


def environment_settings() -> Settings:
    """The environment alone, no `.env`: what processes a benchmark starts run with."""
    return _validated(_env_file=None)


def _validated(**values: Any) -> Settings:
    try:
        return Settings(**values)
    except ValidationError as exc:
        # Every problem at once: a deployment fixed one restart at a time is down for longer.
        problems = dict.fromkeys(_problem(error) for error in exc.errors())
        raise SettingsError(*problems) from None


def _problem(error: Any) -> str:
    """One line for one invalid setting: the variable, what is wrong, and what was given
    unless it is a secret (a Redis URL is shown with its password masked)."""
    field = str(error["loc"][0]) if error["loc"] else "?"
    name = ENV_NAMES.get(field, field)
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if name in SECRET_VARIABLES:
        return f"{name}: {message}"
    if name == "REDIS_URL" and isinstance(given, str):
        return f"{name}: {message} (got {masked_redis_url(given)!r})"
    return f"{name}: {message} (got {given!r})"


def masked_redis_url(url: str) -> str:
    """`url` with its password (in the userinfo or a `password=` option) shown as `***`, so
    errors and logs can name the Redis they mean without handing out its key."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
    userinfo, at, host = rest.rpartition("@")
    if at:
        user = userinfo.partition(":")[0] if ":" in userinfo else ""
        rest = f"{user}:***@{host}"
    return scheme + re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", rest)
