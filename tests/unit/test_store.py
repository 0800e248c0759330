"""The Redis stores on fakeredis: customer directory, call sessions, audit stream, counters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ivr.auth.knowledge import SecretHasher
from ivr.auth.possession import CodePolicy, Possession
from ivr.auth.verifier import Verifier
from ivr.errors import CustomerError
from ivr.flows.engine import CallState
from ivr.store import keys
from ivr.store.audit import FIELDS, AuditLog
from ivr.store.counters import FailureCounter
from ivr.store.customers import Customer, RedisCustomerDirectory
from ivr.store.send_caps import SendLimiter, SendLimits
from ivr.store.sessions import LOCK_TIMEOUT, SessionStore
from tests.support import lax_abuse_guard

PIN = "583920"
PASSCODE = "purpleelephant42"


@pytest.fixture(scope="module")
def hasher() -> SecretHasher:
    return SecretHasher("unit-test-pepper-0123", time_cost=1, memory_cost=1024)


@pytest.fixture
def directory(redis: Any) -> RedisCustomerDirectory:
    return RedisCustomerDirectory(redis)


@pytest.fixture
def verifier(redis: Any, directory: RedisCustomerDirectory, hasher: SecretHasher) -> Verifier:
    audit = AuditLog(redis)
    policy = CodePolicy(key="k" * 32, digits=6, ttl=600, service_digits=8, service_ttl=86400)
    limiter = SendLimiter(
        redis,
        SendLimits(account=5, destination=5, prefix=100, window=600, per_call=3, call_window=3600),
    )
    abuse = lax_abuse_guard(redis, audit)
    possession = Possession(redis, directory, policy, limiter, audit, abuse)
    return Verifier(directory, hasher, FailureCounter(redis), audit, 3, possession, abuse)


def alice(**changes: Any) -> Customer:
    fields: dict[str, Any] = {
        "account": "12345678",
        "phone": "+14155550100",
        "email": "alice@example.com",
        "name": "Alice Example",
        "address": "1 Market Street",
    }
    return Customer(**(fields | changes))


def raw(redis: Any) -> bytes:
    """Every key and value in Redis as one blob, to search for secrets."""
    parts: list[bytes] = []
    for key in redis.scan_iter("*"):
        parts.append(key)
        kind = redis.type(key)
        if kind == b"hash":
            parts += [k + b"=" + v for k, v in redis.hgetall(key).items()]
        elif kind == b"string":
            parts.append(redis.get(key))
        elif kind == b"set":
            parts += list(redis.smembers(key))
        elif kind == b"stream":
            parts += [repr(entry).encode() for entry in redis.xrange(key)]
    return b"\n".join(parts)


# -- customer directory ----------------------------------------------------------------------


class TestCustomerDirectory:
    def test_add_then_get(self, directory: RedisCustomerDirectory) -> None:
        directory.add(alice(pin_hash="$argon2id$fake"))
        got = directory.get("12345678")
        assert got == alice(pin_hash="$argon2id$fake")
        assert got is not None and got.secret_hash("pin") == "$argon2id$fake"
        assert got.secret_hash("passcode") is None
        assert got.secret_hash("sms_otp") is None

    def test_optional_fields_are_not_stored_as_none(
        self, directory: RedisCustomerDirectory, redis: Any
    ) -> None:
        directory.add(Customer(account="123456", phone="+14155550100"))
        assert redis.hgetall(keys.customer("123456")) == {b"phone": b"+14155550100"}
        assert directory.get("123456") == Customer(account="123456", phone="+14155550100")

    @pytest.mark.parametrize("account", ["99999999", "", "abc", "1234", "1" * 13, "12345678\n"])
    def test_get_unknown_or_malformed_is_none(
        self, directory: RedisCustomerDirectory, account: str
    ) -> None:
        directory.add(alice())
        assert directory.get(account) is None

    def test_get_ignores_unknown_hash_fields(
        self, directory: RedisCustomerDirectory, redis: Any
    ) -> None:
        directory.add(alice())
        redis.hset(keys.customer("12345678"), "legacy_field", "x")
        assert directory.get("12345678") == alice()

    def test_duplicate_account_is_refused_and_changes_nothing(
        self, directory: RedisCustomerDirectory
    ) -> None:
        directory.add(alice())
        with pytest.raises(CustomerError, match="12345678 already exists"):
            directory.add(alice(phone="+14155550199", name="Mallory"))
        assert directory.get("12345678") == alice()
        assert directory.accounts_for_phone("+14155550199") == []
        assert directory.accounts_for_phone("+14155550100") == ["12345678"]

    @pytest.mark.parametrize(
        "account", ["12345", "1234567890123", "12345abc", "", "+1234567", "١٢٣٤٥٦٧", "12345678\n"]
    )
    def test_bad_account_number_is_refused(
        self, directory: RedisCustomerDirectory, redis: Any, account: str
    ) -> None:
        with pytest.raises(CustomerError, match=r"must be 6 to 12 digits"):
            directory.add(alice(account=account))
        assert list(redis.scan_iter("*")) == []

    @pytest.mark.parametrize(
        "phone",
        [
            "4155550100",
            "+04155550100",
            "+1 415 555 0100",
            "+1415555010012345",
            "+12345",
            "",
            "anonymous",
            "+14155550100\n",
        ],
    )
    def test_bad_phone_is_refused(
        self, directory: RedisCustomerDirectory, redis: Any, phone: str
    ) -> None:
        with pytest.raises(CustomerError, match=r"is not in E\.164 form; write it like \+1"):
            directory.add(alice(phone=phone))
        assert list(redis.scan_iter("*")) == []

    @pytest.mark.parametrize(
        "email",
        ["alice", "alice@", "@example.com", "a b@example.com", "a@b", "alice@example.com\n"],
    )
    def test_bad_email_is_refused(
        self, directory: RedisCustomerDirectory, redis: Any, email: str
    ) -> None:
        with pytest.raises(CustomerError, match=r"is not an email address"):
            directory.add(alice(email=email))
        assert list(redis.scan_iter("*")) == []

    def test_update_profile_and_secrets(self, directory: RedisCustomerDirectory) -> None:
        directory.add(alice())
        updated = directory.update(
            "12345678", name="Alice New", pin_hash="$argon2id$new", email=None
        )
        assert updated == alice(name="Alice New", pin_hash="$argon2id$new", email=None)
        assert directory.get("12345678") == updated

    def test_update_phone_moves_the_index(self, directory: RedisCustomerDirectory) -> None:
        directory.add(alice())
        directory.update("12345678", phone="+14155550199")
        assert directory.accounts_for_phone("+14155550100") == []
        assert directory.accounts_for_phone("+14155550199") == ["12345678"]

    def test_update_same_phone_keeps_the_index(self, directory: RedisCustomerDirectory) -> None:
        directory.add(alice())
        directory.update("12345678", phone="+14155550100")
        assert directory.accounts_for_phone("+14155550100") == ["12345678"]

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"role": "admin"}, "cannot change role"),
            ({"pin": "583920"}, "cannot change pin"),
            ({"phone": None}, "needs a phone number"),
            ({"phone": "555-0100"}, "E.164"),
            ({"email": "nope"}, "not an email address"),
        ],
    )
    def test_bad_update_is_refused_and_changes_nothing(
        self, directory: RedisCustomerDirectory, changes: dict[str, Any], message: str
    ) -> None:
        directory.add(alice())
        with pytest.raises(CustomerError, match=message):
            directory.update("12345678", **changes)
        assert directory.get("12345678") == alice()

    def test_update_unknown_account(self, directory: RedisCustomerDirectory) -> None:
        with pytest.raises(CustomerError, match="no customer with account number 12345678"):
            directory.update("12345678", name="x")

    def test_refusal_never_echoes_a_secret(self, directory: RedisCustomerDirectory) -> None:
        directory.add(alice())
        with pytest.raises(CustomerError) as caught:
            directory.update("12345678", pin=PIN)
        assert PIN not in str(caught.value)

    def test_remove(self, directory: RedisCustomerDirectory, redis: Any) -> None:
        directory.add(alice(pin_hash="$argon2id$x"))
        counter = FailureCounter(redis)
        counter.add("12345678", "pin")
        counter.add("12345678", "passcode")
        directory.remove("12345678")
        assert directory.get("12345678") is None
        assert directory.accounts_for_phone("+14155550100") == []
        assert counter.count("12345678", "pin") == 0
        assert counter.count("12345678", "passcode") == 0
        assert list(redis.scan_iter("*")) == []
        with pytest.raises(CustomerError, match="no customer"):
            directory.remove("12345678")

    def test_remove_keeps_others_on_the_same_phone(self, directory: RedisCustomerDirectory) -> None:
        directory.add(alice())
        directory.add(alice(account="87654321"))
        directory.remove("12345678")
        assert directory.accounts_for_phone("+14155550100") == ["87654321"]


class TestPhoneIndex:
    def test_one_account_on_a_phone(
        self, directory: RedisCustomerDirectory, verifier: Verifier
    ) -> None:
        directory.add(alice())
        assert directory.accounts_for_phone("+14155550100") == ["12345678"]
        assert verifier.account_for_caller("+14155550100") == "12345678"

    def test_two_accounts_on_one_phone_is_ambiguous(
        self, directory: RedisCustomerDirectory, verifier: Verifier
    ) -> None:
        directory.add(alice())
        directory.add(alice(account="87654321", name="Alice's business"))
        assert directory.accounts_for_phone("+14155550100") == ["12345678", "87654321"]
        assert verifier.account_for_caller("+14155550100") is None

    def test_ambiguity_ends_when_one_moves_away(
        self, directory: RedisCustomerDirectory, verifier: Verifier
    ) -> None:
        directory.add(alice())
        directory.add(alice(account="87654321"))
        directory.update("87654321", phone="+14155550199")
        assert verifier.account_for_caller("+14155550100") == "12345678"
        assert verifier.account_for_caller("+14155550199") == "87654321"

    @pytest.mark.parametrize("caller", ["+14155550111", "anonymous", "", "+266696687"])
    def test_unknown_caller_has_no_account(
        self, directory: RedisCustomerDirectory, verifier: Verifier, caller: str
    ) -> None:
        directory.add(alice())
        assert directory.accounts_for_phone(caller) == []
        assert verifier.account_for_caller(caller) is None


# -- verifier against the stores (counting, auditing, no secrets) -----------------------------


class TestVerifierRecords:
    @pytest.fixture
    def enrolled(self, directory: RedisCustomerDirectory, hasher: SecretHasher) -> None:
        directory.add(alice(pin_hash=hasher.hash(PIN), passcode_hash=hasher.hash(PASSCODE)))

    @staticmethod
    def state(account: str | None = "12345678") -> CallState:
        return CallState(
            call_sid="CA" + "1" * 32, caller="+14155550100", step="pin", account=account
        )

    def test_success_and_failure_are_audited_without_the_secret(
        self, enrolled: None, verifier: Verifier, redis: Any
    ) -> None:
        assert verifier.verify(self.state(), "pin", PIN)
        assert not verifier.verify(self.state(), "pin", "999999")
        assert not verifier.verify(self.state(), "passcode", "orangetiger7")
        events = AuditLog(redis).recent()
        assert [(e["method"], e["outcome"]) for e in events] == [
            ("passcode", "failure"),
            ("pin", "failure"),
            ("pin", "success"),
        ]
        for event in events:
            assert event["event"] == "authenticate"
            assert event["account"] == "12345678"
            assert event["call_sid"] == "CA" + "1" * 32
            assert event["detail"] == "knowledge"
            assert set(event) <= FIELDS | {"at"}
        blob = raw(redis)
        for secret in (PIN, "999999", PASSCODE, "orangetiger7"):
            assert secret.encode() not in blob

    def test_unknown_account_is_audited_but_not_counted(
        self, enrolled: None, verifier: Verifier, redis: Any
    ) -> None:
        assert not verifier.verify(self.state("99999999"), "pin", PIN)
        assert [e["outcome"] for e in AuditLog(redis).recent()] == ["failure_unknown_account"]
        assert list(redis.scan_iter("ivr:failures:*")) == []

    def test_lockout_after_the_cap(self, enrolled: None, verifier: Verifier, redis: Any) -> None:
        for _ in range(3):
            assert not verifier.verify(self.state(), "pin", "999999")
        assert not verifier.verify(self.state(), "pin", PIN)
        events = AuditLog(redis).recent()
        assert [e["outcome"] for e in events if e["event"] == "authenticate"] == [
            "locked",
            "failure_locked_now",
            "failure",
            "failure",
        ]
        assert [(e["method"], e["outcome"]) for e in events if e["event"] == "lockout"] == [
            ("pin", "locked")
        ]  # the attempt that reached the cap, once
        assert FailureCounter(redis).count("12345678", "pin") == 3
        # Another factor of the same account is unaffected.
        assert verifier.verify(self.state(), "passcode", PASSCODE)

    def test_unusable_answer_is_a_failure(
        self, enrolled: None, verifier: Verifier, redis: Any
    ) -> None:
        assert not verifier.verify(self.state(), "passcode", None)
        assert FailureCounter(redis).count("12345678", "passcode") == 1

    def test_unknown_method_is_a_bug_not_a_failure(
        self, enrolled: None, verifier: Verifier
    ) -> None:
        with pytest.raises(ValueError, match="unknown method"):
            verifier.verify(self.state(), "retina_scan", "123456")

    def test_a_code_never_sent_never_matches(self, enrolled: None, verifier: Verifier) -> None:
        assert not verifier.verify(self.state(), "sms_otp", "123456")


# -- call sessions ---------------------------------------------------------------------------


class TestSessionStore:
    def test_save_sets_the_ttl(self, redis: Any) -> None:
        store = SessionStore(redis, 600)
        state = CallState(call_sid="CA" + "a" * 32, caller="+14155550100", step="identify")
        with store.locked(state.call_sid) as lock:
            store.save(state, -1, "<Response/>", lock)
        ttl = redis.ttl(keys.call(state.call_sid))
        assert 0 < ttl <= 600

    def test_every_save_refreshes_the_ttl(self, redis: Any) -> None:
        store = SessionStore(redis, 600)
        state = CallState(call_sid="CA" + "a" * 32, caller="+1", step="identify")
        with store.locked(state.call_sid) as lock:
            store.save(state, -1, "<Response/>", lock)
        redis.expire(keys.call(state.call_sid), 5)
        state.seq = 1
        with store.locked(state.call_sid) as lock:
            store.save(state, 0, "<Response/>", lock)
        assert 5 < redis.ttl(keys.call(state.call_sid)) <= 600

    def test_round_trip(self, redis: Any) -> None:
        store = SessionStore(redis, 3600)
        state = CallState(
            call_sid="CA" + "b" * 32,
            caller="+14155550100",
            step="main_menu",
            seq=4,
            tries=1,
            account="12345678",
            proofs=["pin"],
            failures=1,
        )
        with store.locked(state.call_sid) as lock:
            store.save(state, 3, "<Response><Hangup/></Response>", lock)
        stored = store.load(state.call_sid)
        assert stored is not None
        assert stored.state == state
        assert stored.reply_seq == 3
        assert stored.reply == "<Response><Hangup/></Response>"

    def test_missing_or_partial_session_is_none(self, redis: Any) -> None:
        store = SessionStore(redis, 3600)
        assert store.load("CA" + "c" * 32) is None
        redis.hset(keys.call("CA" + "c" * 32), "reply", "x")
        assert store.load("CA" + "c" * 32) is None

    def test_state_json_holds_no_input(self, redis: Any) -> None:
        state = CallState(call_sid="CA" + "d" * 32, caller="+1", step="pin", account="12345678")
        assert set(json.loads(state.to_json())) == {
            "call_sid",
            "caller",
            "step",
            "seq",
            "tries",
            "account",
            "proofs",
            "failures",
            "ended",
            "holding",
            "waited",
            "called_back",
            "ref",
            "proven_at",
            "signals",
            "queue",
            "flow_version",
        }

    def test_lock_is_released_after_use(self, redis: Any) -> None:
        store = SessionStore(redis, 3600)
        sid = "CA" + "e" * 32
        with store.locked(sid):
            assert redis.exists(keys.call_lock(sid))
            assert 0 < redis.ttl(keys.call_lock(sid)) <= LOCK_TIMEOUT
        assert not redis.exists(keys.call_lock(sid))

    def test_lock_is_released_on_error(self, redis: Any) -> None:
        store = SessionStore(redis, 3600)
        sid = "CA" + "f" * 32
        with pytest.raises(RuntimeError), store.locked(sid):
            raise RuntimeError("boom")
        assert not redis.exists(keys.call_lock(sid))


# -- audit log -------------------------------------------------------------------------------


class TestAuditLog:
    def test_records_and_reads_newest_first(self, redis: Any) -> None:
        audit = AuditLog(redis)
        audit.record("call_started", call_sid="CA1", caller="+14155550100")
        audit.record("authenticate", call_sid="CA1", method="pin", outcome="success", detail=None)
        events = audit.recent()
        assert [e["event"] for e in events] == ["authenticate", "call_started"]
        assert events[0]["outcome"] == "success"
        assert "detail" not in events[0]  # None fields are left out
        assert float(events[0]["at"]) > 0

    def test_recent_count(self, redis: Any) -> None:
        audit = AuditLog(redis)
        for n in range(5):
            audit.record("authenticate", detail=str(n))
        assert [e["detail"] for e in audit.recent(2)] == ["4", "3"]

    @pytest.mark.parametrize("field", ["pin", "passcode", "digits", "speech", "secret", "at"])
    def test_refuses_unknown_fields(self, redis: Any, field: str) -> None:
        audit = AuditLog(redis)
        with pytest.raises(ValueError, match="audit fields not allowed") as caught:
            audit.record("authenticate", **{field: PIN})
        assert PIN not in str(caught.value)
        assert not redis.exists(keys.AUDIT)

    def test_each_record_is_one_stream_entry(self, redis: Any) -> None:
        AuditLog(redis).record("call_started")
        assert redis.xlen(keys.AUDIT) == 1


# -- failure counter -------------------------------------------------------------------------


class TestFailureCounter:
    def test_count_add_reset(self, redis: Any) -> None:
        counter = FailureCounter(redis)
        assert counter.count("12345678", "pin") == 0
        assert counter.add("12345678", "pin") == 1
        assert counter.add("12345678", "pin") == 2
        assert counter.count("12345678", "pin") == 2
        counter.reset("12345678", "pin")
        assert counter.count("12345678", "pin") == 0
        counter.reset("12345678", "pin")  # resetting nothing is fine

    def test_accounts_and_methods_are_separate(self, redis: Any) -> None:
        counter = FailureCounter(redis)
        counter.add("12345678", "pin")
        counter.add("12345678", "passcode")
        counter.add("12345678", "passcode")
        counter.add("87654321", "pin")
        assert counter.count("12345678", "pin") == 1
        assert counter.count("12345678", "passcode") == 2
        assert counter.count("87654321", "pin") == 1
        assert counter.count("87654321", "passcode") == 0

    def test_undo_never_goes_below_zero(self, redis: Any) -> None:
        counter = FailureCounter(redis)
        counter.add("12345678", "pin")
        counter.reset("12345678", "pin")  # a success in another call, between add and undo
        counter.undo("12345678", "pin")
        assert counter.count("12345678", "pin") == 0
        counter.add("12345678", "pin")
        counter.add("12345678", "pin")
        counter.undo("12345678", "pin")
        assert counter.count("12345678", "pin") == 1

    def test_counters_live_under_the_key_scheme(self, redis: Any) -> None:
        FailureCounter(redis).add("12345678", "pin")
        assert [k.decode() for k in redis.scan_iter("*")] == ["ivr:failures:12345678:pin"]
        assert redis.ttl("ivr:failures:12345678:pin") == -1  # consecutive, until success/reset
