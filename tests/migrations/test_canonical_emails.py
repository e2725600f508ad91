"""Migration 0015: stored emails move to their canonical form; a younger live look-alike of a
live address keeps its own (one live account per canonical address)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from infra.migrate import upgrade
from tests.auth_helpers import wide
from tests.conftest import fresh_database


@pytest.fixture
def empty_url(pg_server_url: str) -> Iterator[str]:
    with fresh_database(pg_server_url, template="template0") as url:
        yield url


def test_emails_become_canonical_and_live_look_alikes_stay_apart(empty_url: str) -> None:
    upgrade(empty_url, "0014_storage_erasure")
    rows = [  # (email, deleted, minutes after the first)
        ("alice@example.com", False, 0),
        (f"{wide('a')}lice@example.com", False, 1),  # a younger look-alike of a live address: kept as it is
        (f"bob@{wide('e')}xample.com", False, 2),
        ("carol@xn--bcher-kva.example", False, 3),
        (f"{wide('d')}ave@example.com", True, 4),  # deleted: free to change
        (f"{wide('d')}ave@example.com", False, 5),
    ]
    ids = []
    with psycopg.connect(empty_url, autocommit=True) as conn:
        for email, deleted, minutes in rows:
            user_id = uuid.uuid4()
            ids.append(user_id)
            conn.execute(
                "INSERT INTO users (id, email, language, token_version, created_at, deleted_at) "
                "VALUES (%s, %s, 'en', 0, now() + make_interval(mins => %s), "
                "CASE WHEN %s THEN now() END)",
                (user_id, email, minutes, deleted),
            )
        conn.execute(
            "INSERT INTO mail_tokens (id, token_hash, user_id, purpose, email, created_at, expires_at) "
            "VALUES (%s, 'h', %s, 'verify_email', %s, now(), now() + interval '1 day')",
            (uuid.uuid4(), ids[2], f"bob@{wide('e')}xample.com"),
        )
    upgrade(empty_url)
    with psycopg.connect(empty_url) as conn:
        emails = dict(conn.execute("SELECT id, email FROM users").fetchall())
        token_email = conn.execute("SELECT email FROM mail_tokens").fetchone()
    assert [emails[i] for i in ids] == [
        "alice@example.com",
        f"{wide('a')}lice@example.com",
        "bob@example.com",
        "carol@bücher.example",
        "dave@example.com",
        "dave@example.com",
    ]
    assert token_email == ("bob@example.com",)
