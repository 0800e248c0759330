"""The services one app instance uses, built once by the factory and found by the views."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from ivr.auth.abuse import AbuseLimits
from ivr.auth.agent_policy import AgentPolicy
from ivr.auth.knowledge import SecretHasher
from ivr.auth.possession import CodePolicy, Possession
from ivr.auth.verifier import Verifier
from ivr.flows.engine import CallState, Engine
from ivr.flows.schema import Flow
from ivr.settings import Settings, load_settings
from ivr.store.abuse import AbuseGuard
from ivr.store.agents import AgentDirectory
from ivr.store.audit import AuditLog
from ivr.store.counters import FailureCounter
from ivr.store.customers import RedisCustomerDirectory
from ivr.store.flows import ServedFlow
from ivr.store.send_caps import SendLimiter, SendLimits
from ivr.store.sessions import SessionStore
from ivr.twilio_api import CHECK_TIMEOUT, TwilioVerify, make_client

EXTENSION = "ivr"
MAX_ENGINES = 16


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    flow: Flow
    engine: Engine
    sessions: SessionStore
    customers: RedisCustomerDirectory
    hasher: SecretHasher
    audit: AuditLog
    possession: Possession
    counter: FailureCounter
    agents: AgentDirectory
    agent_policy: AgentPolicy | None  # None: no policy file, and the agent API refuses all
    served: ServedFlow  # the published versions; `flow` and `engine` are the file's
    verifier: Verifier
    _engines: dict[str, Engine] = field(default_factory=dict)
    # The path of each step's answer and poll URL, by script root (`ivr.web.voice._reply`).
    action_paths: dict[tuple[str, bool, str], str] = field(default_factory=dict)

    def current(self) -> tuple[str, Engine]:
        """The flow version a new call starts on, and its engine."""
        return self._engine(*self.served.current())

    def pinned(self, state: CallState) -> Engine:
        """The engine of the version `state` started on."""
        return self._engine(*self.served.pinned(state.flow_version))[1]

    def _engine(self, digest: str, flow: Flow) -> tuple[str, Engine]:
        if digest == self.served.file_hash:
            return digest, self.engine
        engine = self._engines.get(digest)
        if engine is None or engine.flow is not flow:
            if len(self._engines) >= MAX_ENGINES:
                self._engines.clear()
            engine = self._engines[digest] = Engine(flow, self.verifier)
        return digest, engine


def build_runtime(
    settings: Settings,
    redis: Redis,
    flow: Flow,
    agent_policy: AgentPolicy | None = None,
    check: Callable[[Flow], None] = lambda flow: None,
) -> Runtime:
    """`check` raises for a published version this service must not serve."""
    customers = RedisCustomerDirectory(redis)
    hasher = make_hasher(settings)
    audit = AuditLog(redis)
    abuse = make_abuse_guard(settings, redis, audit)
    possession = make_possession(settings, redis, customers, audit, abuse)
    counter = FailureCounter(redis)
    verifier = Verifier(
        customers,
        hasher,
        counter,
        audit,
        settings.account_max_failures,
        possession,
        abuse=abuse,
        claim_key=claim_key(settings),
    )
    return Runtime(
        settings=settings,
        redis=redis,
        flow=flow,
        engine=Engine(flow, verifier),
        sessions=SessionStore(redis, settings.session_ttl),
        customers=customers,
        hasher=hasher,
        audit=audit,
        possession=possession,
        counter=counter,
        agents=AgentDirectory(redis),
        agent_policy=agent_policy,
        served=ServedFlow(redis, settings.flow, flow, check),
        verifier=verifier,
    )


def make_possession(
    settings: Settings,
    redis: Redis,
    customers: RedisCustomerDirectory,
    audit: AuditLog,
    abuse: AbuseGuard,
) -> Possession:
    policy = CodePolicy(
        key=settings.code_key,
        digits=settings.code_digits,
        ttl=settings.code_ttl,
        service_digits=settings.service_code_digits,
        service_ttl=settings.service_code_ttl,
    )
    verify = {
        # Checked while the caller waits under the call's lock: the short timeout.
        method: TwilioVerify(
            make_client(settings, timeout=CHECK_TIMEOUT), settings.verify_service_sid or ""
        )
        for method, backend in (
            ("sms_otp", settings.sms_backend),
            ("email_otp", settings.email_backend),
        )
        if backend == "verify"
    }
    limiter = SendLimiter(redis, send_limits(settings))
    return Possession(redis, customers, policy, limiter, audit, abuse, verify)


def make_abuse_guard(settings: Settings, redis: Redis, audit: AuditLog) -> AbuseGuard:
    return AbuseGuard(redis, abuse_limits(settings), audit)


def send_limits(settings: Settings) -> SendLimits:
    return SendLimits(
        account=settings.send_limit_account,
        destination=settings.send_limit_destination,
        prefix=settings.send_limit_prefix,
        window=settings.send_window,
        per_call=settings.code_requests_per_call,
        call_window=settings.session_ttl,
    )


def abuse_limits(settings: Settings) -> AbuseLimits:
    return AbuseLimits(
        window=settings.abuse_window,
        cooldown=settings.abuse_cooldown,
        number_failures=settings.abuse_number_failures,
        number_accounts=settings.abuse_number_accounts,
        withheld_failures=settings.abuse_withheld_failures,
        account_numbers=settings.abuse_account_numbers,
        global_failures=settings.abuse_global_failures,
    )


def claim_key(settings: Settings) -> str | None:
    """The key of the digests that stand for account digits matching no account.

    Every web process must use the same one (a call moves between processes), and only web
    processes compute claims. The first set of IVR_CODE_KEY, IVR_PEPPER and TWILIO_AUTH_TOKEN:
    our own secrets first, the token Twilio also knows last; the digest is domain-separated
    from every other use of the key. None (nothing set) makes every typed claim fail closed.
    """
    return settings.code_key or settings.pepper or settings.twilio_auth_token


def make_hasher(settings: Settings) -> SecretHasher:
    return SecretHasher(
        settings.pepper,
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
    )


#: What a web request (or a CLI command) does when Redis restarts or fails over under it: a
#: command whose connection broke, or was refused, is sent again on a new one after 0.1, 0.2,
#: 0.4 and 0.4 s, about 1 s in all. A timeout is not tried again: each costs `socket_timeout`,
#: and a request holds its call's lock for a few commands (ivr.store.sessions.LOCK_TIMEOUT);
#: the caller hears the apology instead. The worker waits out longer outages (ivr.worker).
WEB_RETRY = Retry(
    ExponentialBackoff(cap=0.4, base=0.05), 4, supported_errors=(RedisConnectionError,)
)


def connect_redis(url: str, settings: Settings | None = None, **options: Any) -> Redis:
    """The one way this project's processes (web, worker, CLI, `ivr dev`) reach Redis.

    Short timeouts, so an outage becomes an apology well inside Twilio's 15 s; redis-py's own
    retry over a restart; for a rediss:// URL, the certificate checks IVR_REDIS_SSL_CERT_REQS
    and IVR_REDIS_SSL_CA_CERTS ask for (from `settings`, else the environment). `options`
    (redis-py's keyword arguments) override these, e.g. the worker's longer retry.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
        "retry": WEB_RETRY,
        # A connection idle this long is pinged first: managed Redis closes idle connections.
        "health_check_interval": 30,
    }
    if url.startswith("rediss://"):
        tls = settings or load_settings()
        kwargs["ssl_cert_reqs"] = tls.redis_ssl_cert_reqs
        if tls.redis_ssl_ca_certs is not None:
            kwargs["ssl_ca_certs"] = str(tls.redis_ssl_ca_certs)
    return Redis.from_url(url, **(kwargs | options))


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION]
