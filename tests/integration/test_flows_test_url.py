"""`ivr flows test --url`: the shipped scenarios played against a running service.

The real stack of the integration tier (gunicorn, an rq worker, redis-server) serves the
default flow; `ivr flows test --url` runs as an admin runs it, in its own process and folder,
with the service's settings in its environment: it enrols the scenario file's customers in the
service's Redis, plays every scenario over signed HTTP, reads the codes and the call back from
the outbox the worker delivers to, and asks the API for service codes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import FLOWS_DIR, WebProcess, service_env

SCENARIOS = FLOWS_DIR / "tests" / "default.yaml"


def flows_test(url: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ivr", "flows", "test", "--url", url, str(SCENARIOS)],
        cwd=cwd,  # not the checkout: no `.ivr` of a dev stack to pick up
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_shipped_scenarios_pass_against_the_running_stack(
    web_factory, worker_factory, redis_url: str, tmp_path: Path
) -> None:
    # As in process (scenario_inprocess.WORKFLOW_SID): enqueued as a task, so the scenarios'
    # `assurance:` and `attributes:` can be seen in the TwiML.
    outbox = {
        "IVR_OUTBOX": str(tmp_path / "outbox.jsonl"),
        "IVR_TASKROUTER_WORKFLOW_SID": "WW" + "0" * 32,
    }
    web: WebProcess = web_factory(outbox)
    worker_factory(outbox)
    result = flows_test(web.base_url, service_env(redis_url, outbox), tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    scenarios = SCENARIOS.read_text(encoding="utf-8").count("\n  - name: ")
    assert scenarios == 20
    assert f"{scenarios} scenario(s) passed, 0 failed" in output, output
    # Caller time to the first proof, from the service's audit trail as in process.
    pin_caller = next(line for line in output.splitlines() if "a PIN caller reaches" in line)
    assert re.search(r"authenticated \d+\.\d s, queue \d+\.\d s", pin_caller), pin_caller
    assert "coverage is measured in process only" in output
