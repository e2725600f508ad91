"""Job deadlines and echoed inputs through HTTP (docs/job-deadlines.md): ``Cancel-After`` in
its forms, ``deadline_s`` in the body, the earlier of both, the refusals (422
``invalid_cancel_after`` / ``invalid_deadline``) that change nothing, and the inputs every job
answer shows. The cancel at the deadline is tested in tests/pipeline/test_job_deadlines.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.api_factories import Caller, make_user
from tests.test_vto import catalog, job_body

JOBS = "/api/v1/vto/jobs"
MOST = 86_400  # VTO_JOB_MAX_DEADLINE_S's default


def seller(services: Any, credits: int = 30) -> Caller:
    caller = make_user(services)
    services.ledger.grant(caller.id, "test", credits=credits)
    return caller


def deadline_of(job: dict[str, Any]) -> tuple[int | None, timedelta | None]:
    """The job's ``deadline_s`` and its ``deadline_at`` less its creation."""
    at = job["deadline_at"]
    since = None if at is None else datetime.fromisoformat(at) - datetime.fromisoformat(job["created_at"])
    return job["deadline_s"], since


@pytest.fixture
def ordering(client: Any, services: Any) -> tuple[Any, Caller, dict[str, str]]:
    caller = seller(services)
    return client, caller, catalog(client, caller)


def test_cancel_after_in_its_forms_sets_the_deadline(ordering: tuple[Any, Caller, dict[str, str]]) -> None:
    client, caller, items = ordering
    forms = {"90s": 90, "10m": 600, "1h": 3600, "1h30m": 5400, "2m30s": 150, "45": 45, str(MOST): MOST}
    for seed, (header, seconds) in enumerate(forms.items()):
        created = client.post(
            JOBS, json=job_body(items, seed=seed), headers={**caller.headers, "Cancel-After": header}
        )
        assert created.status_code == 202, created.text
        assert deadline_of(created.json()) == (seconds, timedelta(seconds=seconds)), header
        shown = client.get(f"{JOBS}/{created.json()['id']}", headers=caller.headers).json()
        assert deadline_of(shown) == (seconds, timedelta(seconds=seconds)), header
        assert shown["deadline_at"] == created.json()["deadline_at"]
    plain = client.post(JOBS, json=job_body(items, seed=99), headers=caller.headers).json()
    assert deadline_of(plain) == (None, None)


def test_deadline_s_in_the_body_and_the_earlier_of_both_wins(
    ordering: tuple[Any, Caller, dict[str, str]],
) -> None:
    client, caller, items = ordering
    cases = [(None, 120, 120), ("10m", 120, 120), ("60s", 600, 60), ("2m", 120, 120)]
    for seed, (header, body, expected) in enumerate(cases):
        headers = caller.headers if header is None else {**caller.headers, "Cancel-After": header}
        created = client.post(JOBS, json={**job_body(items, seed=seed), "deadline_s": body}, headers=headers)
        assert created.status_code == 202, created.text
        assert deadline_of(created.json()) == (expected, timedelta(seconds=expected)), (header, body)
        listed = client.get(JOBS, headers=caller.headers).json()["items"]
        (mine,) = [job for job in listed if job["id"] == created.json()["id"]]
        assert deadline_of(mine) == (expected, timedelta(seconds=expected))


def test_the_deadline_is_part_of_the_idempotent_request(ordering: tuple[Any, Caller, dict[str, str]]) -> None:
    client, caller, items = ordering
    headers = {**caller.headers, "Idempotency-Key": "deadline-1", "Cancel-After": "5m"}
    once = client.post(JOBS, json=job_body(items), headers=headers)
    again = client.post(JOBS, json=job_body(items), headers=headers)
    assert (once.status_code, again.status_code) == (202, 202)
    assert once.json()["id"] == again.json()["id"]
    assert deadline_of(again.json()) == (300, timedelta(seconds=300))
    other = client.post(JOBS, json=job_body(items), headers={**headers, "Cancel-After": "6m"})
    assert other.status_code == 409, other.text
    assert other.json()["code"] == "idempotency_key_reused"


BAD_HEADERS = [
    "",
    "0",
    "0s",
    "-5",
    "5d",
    "1.5s",
    "abc",
    "10m1h",
    "1h1h",
    "90 s",
    str(MOST + 1),
    "25h",
    "1" * 65,
]
BAD_BODIES: list[Any] = [0, -1, "90", 1.5, True, MOST + 1, {"s": 1}]


REFUSALS: list[tuple[str | None, Any, str]] = [
    *[(h, None, "invalid_cancel_after") for h in BAD_HEADERS],
    *[(None, b, "invalid_deadline") for b in BAD_BODIES],
    ("10m", 0, "invalid_deadline"),
    ("0s", 60, "invalid_cancel_after"),
]


def test_a_malformed_deadline_is_refused_and_changes_nothing(
    ordering: tuple[Any, Caller, dict[str, str]],
) -> None:
    client, caller, items = ordering  # a real catalog: with a valid deadline, each would be a job
    for header, body, code in REFUSALS:
        headers = caller.headers if header is None else {**caller.headers, "Cancel-After": header}
        payload = job_body(items) if body is None else {**job_body(items), "deadline_s": body}
        response = client.post(JOBS, json=payload, headers=headers)
        assert response.status_code == 422, (header, body, response.text)
        assert response.json()["code"] == code, (header, body)
    assert client.get("/api/v1/points", headers=caller.headers).json()["credit"] == 30
    assert client.get(JOBS, headers=caller.headers).json()["items"] == []


def test_every_job_answer_echoes_its_inputs(ordering: tuple[Any, Caller, dict[str, str]]) -> None:
    client, caller, items = ordering
    body = {**job_body(items, seed=11), "pose": "front", "deadline_s": 900}
    created = client.post(JOBS, json=body, headers=caller.headers)
    assert created.status_code == 202, created.text
    expected = {
        "product_ids": [items["product_id"]],
        "model_asset_id": items["model_asset_id"],
        "background_asset_id": None,
        "pose": "front",
        "options": {**body["options"]},
        "deadline_s": 900,
    }
    job_id = created.json()["id"]
    shown = client.get(f"{JOBS}/{job_id}", headers=caller.headers).json()
    (listed,) = [j for j in client.get(JOBS, headers=caller.headers).json()["items"] if j["id"] == job_id]
    for answer in (created.json(), shown, listed):
        assert {k: answer[k] for k in expected} == expected
        assert answer["deadline_at"] == created.json()["deadline_at"]
    # options the client left out are shown as the job was ordered: with their defaults
    default = client.post(
        JOBS, json={**job_body(items), "options": {"seed": 4}}, headers=caller.headers
    ).json()
    assert default["options"] == {"width": 768, "height": 1024, "seed": 4, "num_outputs": 1}
    assert default["pose"] == "auto"
    assert (
        client.get(f"{JOBS}/{default['id']}", headers=caller.headers).json()["options"] == default["options"]
    )
