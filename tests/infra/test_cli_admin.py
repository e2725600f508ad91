"""``vto admin add|remove|list``: the operator's tool for the stored admin role, on the
server's database (the same settings as ``vto serve``), effective at the next request."""

from __future__ import annotations

from typing import Any

import pytest

from infra import cli
from tests.api_factories import make_user
from tests.auth_helpers import API, PASSWORD, bearer, is_problem, login, register


def test_admin_add_list_remove_take_effect_at_once(vto: Any, client: Any, services: Any) -> None:
    operator, target = make_user(services, verified=True), make_user(services)
    grant = {"email": target.user.email, "credits": 5, "reason": "welcome"}
    is_problem(client.post(f"{API}/admin/grants", json=grant, headers=operator.headers), 403, "forbidden")
    listed = vto("admin", "list")
    assert listed.exit_code == 0 and listed.stdout == ""
    assert "no admins" in listed.stderr

    added = vto("admin", "add", f"  {operator.user.email.upper()} ")
    assert added.exit_code == 0, added.output
    assert added.stdout == f"{operator.user.email} ({operator.id}) is now an admin\n"
    # the same access token, no new sign-in: the role is read on every request
    assert client.post(f"{API}/admin/grants", json=grant, headers=operator.headers).status_code == 201
    assert client.get(f"{API}/users/me", headers=operator.headers).json()["roles"] == ["admin"]
    again = vto("admin", "add", operator.user.email)
    assert (again.exit_code, again.stdout) == (
        0,
        f"{operator.user.email} ({operator.id}) was already an admin\n",
    )
    listed = vto("admin", "list")
    assert listed.exit_code == 0
    [line] = listed.stdout.splitlines()
    email, user_id, granted_at, granted_by, verified = line.split("\t")
    assert (email, user_id, granted_by) == (operator.user.email, str(operator.id), "vto admin add")
    assert verified == "verified"
    assert granted_at

    removed = vto("admin", "remove", operator.user.email)
    assert removed.exit_code == 0, removed.output
    assert removed.stdout == f"{operator.user.email} ({operator.id}) is no longer an admin\n"
    is_problem(client.post(f"{API}/admin/grants", json=grant, headers=operator.headers), 403, "forbidden")
    assert client.get(f"{API}/users/me", headers=operator.headers).json()["roles"] == ["user"]
    not_admin = vto("admin", "remove", operator.user.email)
    assert (not_admin.exit_code, not_admin.stdout) == (
        0,
        f"{operator.user.email} ({operator.id}) was not an admin\n",
    )
    assert vto("admin", "list").stdout == ""


def test_admin_add_refuses_an_unknown_or_deleted_email(vto: Any, client: Any, services: Any) -> None:
    unknown = vto("admin", "add", "nobody@example.com")
    assert unknown.exit_code == 1
    assert "no registered account has the email 'nobody@example.com'" in unknown.stderr
    assert vto("admin", "remove", "nobody@example.com").exit_code == 1

    gone = make_user(services, password=PASSWORD)
    ended = client.request("DELETE", f"{API}/users/me", json={"password": PASSWORD}, headers=gone.headers)
    assert ended.status_code == 204
    deleted = vto("admin", "add", gone.user.email)
    assert deleted.exit_code == 1 and "no registered account" in deleted.stderr
    assert vto("admin", "list").stdout == ""


def test_admin_add_refuses_an_unverified_address_unless_forced(vto: Any, client: Any, services: Any) -> None:
    """Attack 1: register boss@corp before the operator runs ``vto admin add boss@corp``; the
    registrant never proved the address, so the command refuses it (exit 1, nothing granted)
    until the owner verifies it, or the operator insists with ``--force`` (with a warning)."""
    squatter = register(client, "Boss@Corp.example")
    pair = login(client, "boss@corp.example").json()
    headers = bearer(pair["access_token"])
    refused = vto("admin", "add", "boss@corp.example")
    assert refused.exit_code == 1 and refused.stdout == ""
    assert "has not verified" in refused.stderr and "--force" in refused.stderr
    grant = {"email": "boss@corp.example", "credits": 10_000_000, "reason": "mine"}
    is_problem(client.post(f"{API}/admin/grants", json=grant, headers=headers), 403, "forbidden")
    assert client.get(f"{API}/users/me", headers=headers).json()["roles"] == ["user"]
    assert vto("admin", "list").stdout == ""

    forced = vto("admin", "add", "--force", "boss@corp.example")
    assert forced.exit_code == 0, forced.output
    assert forced.stdout == f"boss@corp.example ({squatter['id']}) is now an admin\n"
    assert "warning" in forced.stderr and "not verified" in forced.stderr
    [line] = vto("admin", "list").stdout.splitlines()
    assert line.split("\t")[0] == "boss@corp.example" and line.split("\t")[-1] == "unverified"
    assert client.get(f"{API}/users/me", headers=headers).json()["roles"] == ["admin"]


def test_serve_and_api_warn_that_vto_admin_emails_is_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("VTO_ADMIN_EMAILS", raising=False)
    with caplog.at_level("WARNING", logger="vto"):
        assert cli.warn_retired_variables() == []
    assert caplog.records == []
    monkeypatch.setenv("VTO_ADMIN_EMAILS", "boss@example.com")
    with caplog.at_level("WARNING", logger="vto"):
        assert cli.warn_retired_variables() == ["VTO_ADMIN_EMAILS"]
    [record] = caplog.records
    assert "VTO_ADMIN_EMAILS is set and ignored" in record.getMessage()
    assert "vto admin add EMAIL" in record.getMessage()
