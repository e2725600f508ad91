"""/readyz (to the operators) and /metrics name a projection that cannot apply an event, in
every process."""

from __future__ import annotations

import time
from typing import Any

from tests.api_factories import make_user
from tests.test_ops import OPERATOR, api_settings  # noqa: F401 (the fixture: settings with the operators' token)


def test_a_stuck_projection_turns_readiness_red_and_names_the_event(client: Any, services: Any) -> None:
    assert client.get("/readyz").status_code == 200
    caller = make_user(services)
    # An event the points projection cannot store (NUL in a reason), as written before the
    # API refused such input; the ledger itself accepts any text.
    bad = services.ledger.adjust(caller.id, "credit", 1, "bad\x00reason").position
    deadline = time.monotonic() + 30
    while (ready := client.get("/readyz", headers=OPERATOR)).status_code == 200:
        assert time.monotonic() < deadline, "readiness stayed green"
        time.sleep(0.05)
    assert ready.status_code == 503
    body = ready.json()
    assert body["code"] == "not_ready"
    assert f"points: cannot apply event {bad}" in body["checks"]["projections"]
    assert body["checks"]["database"] == "ok"
    metrics = client.get("/metrics", headers=OPERATOR).text
    line = next(
        x for x in metrics.splitlines() if x.startswith('vto_projection_stuck_failures{projection="points"}')
    )
    assert float(line.split()[-1]) >= 1
    assert 'vto_projection_stuck_failures{projection="jobs"} 0.0' in metrics
    # A command by that user does not wait out the read-your-writes deadline behind it.
    started = time.monotonic()
    assert services.wait_for(services.ledger.adjust(caller.id, "credit", 1, "fine").position) is False
    assert time.monotonic() - started < services.settings.read_your_writes_timeout_s
