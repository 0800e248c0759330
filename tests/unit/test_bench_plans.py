"""The benchmark's calls share nothing the server counts per account, phone or calling number, so
no lockout, send cap or per-number limit decides its numbers, and the newest text to an SMS
call's phone is that call's code (the benchmark needs no knowledge of how codes rest)."""

from collections import Counter

import pytest

from bench.plans import CodeFromOutbox, calls_within, parse_mix, plan_calls
from ivr.settings import Settings
from ivr.simulator import Keys

PLANS = plan_calls(200)


def default(field: str) -> int:
    return int(Settings.model_fields[field].default)


def test_every_call_has_a_calling_number_of_its_own() -> None:
    calls_per_number = Counter(plan.from_number for plan in PLANS)
    assert calls_per_number.most_common(1)[0][1] == 1


def test_every_call_claims_an_account_and_a_phone_of_its_own() -> None:
    assert len({plan.customer.account for plan in PLANS}) == len(PLANS)
    assert len({plan.customer.phone for plan in PLANS}) == len(PLANS)


def test_caller_id_calls_come_from_the_phone_on_file_the_others_from_nobodys() -> None:
    on_file = {plan.customer.phone for plan in PLANS}
    for plan in PLANS:
        if plan.inputs[0] == Keys("*#"):
            assert plan.from_number == plan.customer.phone
        else:
            assert plan.from_number not in on_file


def test_an_sms_call_reads_the_code_from_its_own_customers_phone_alone() -> None:
    reads = [
        (plan, item.phone)
        for plan in PLANS
        for item in plan.inputs
        if isinstance(item, CodeFromOutbox)
    ]
    assert len(reads) == 50
    assert all(phone == plan.customer.phone for plan, phone in reads)
    assert Counter(phone for _, phone in reads).most_common(1)[0][1] == 1


def test_a_run_stays_within_the_production_send_caps() -> None:
    per_customer = max(plan.texts for plan in PLANS)
    assert per_customer <= min(default("send_limit_account"), default("send_limit_destination"))
    # Every phone is +1: the per-prefix cap bounds the run, and the CLI refuses longer ones.
    prefix_cap = default("send_limit_prefix")
    allowed = calls_within(plan_calls(1000), prefix_cap)
    assert sum(plan.texts for plan in plan_calls(allowed)) == prefix_cap
    assert sum(plan.texts for plan in plan_calls(allowed + 1)) == prefix_cap + 1


def test_a_mix_plays_the_scripts_in_its_proportions_with_customers_of_their_own() -> None:
    plans = plan_calls(40, 100, parse_mix("pin=1,sms=3"))
    assert Counter(plan.label for plan in plans) == {"sms step-up": 30, "pin success": 10}
    assert len({plan.customer.account for plan in plans}) == 40
    assert plans[0].customer.account == "40000100"


@pytest.mark.parametrize("text", ["bogus=1", "sms", "sms=x", "sms=21", "pin=0,sms=0"])
def test_a_mix_it_cannot_read_is_refused_saying_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"NAME=WEIGHT|at least one"):
        parse_mix(text)
