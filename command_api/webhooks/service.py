"""Webhook rules: which URLs a job may name, the account's signing secret and its rotation,
who sees a job's deliveries and asks for one again; and the job as a webhook's ``data``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from command_api.catalog.media import UrlSigner
from command_api.pagination import Page, cut, decode
from command_api.problems import DomainError, NotFound
from command_api.vto import service as jobs
from command_api.webhooks import repository
from command_api.webhooks.schemas import DeliveryOut, SecretOut
from infra.orm import make_sessionmaker
from infra.storage import Storage
from pipeline.webhooks import signing
from pipeline.webhooks.targets import TargetNotAllowed, TargetPolicy


class WebhookUrlNotAllowed(DomainError):
    status, code = 422, "webhook_url_not_allowed"


def check_webhook_url(targets: TargetPolicy, url: str) -> None:
    """``WebhookUrlNotAllowed`` (422) for a URL webhooks may not go to (blocks while its host
    is resolved)."""
    try:
        targets.check(url)
    except TargetNotAllowed as exc:
        raise WebhookUrlNotAllowed(str(exc)) from None


def secret(session: Session, user_id: uuid.UUID) -> SecretOut:
    """The account's current signing secret, made on first use."""
    key = repository.current_secret(session, user_id)
    if key is None:
        repository.lock_secrets(session, user_id)
        repository.add_secret(session, user_id)
        key = repository.current_secret(session, user_id)
        assert key is not None
    return SecretOut(key=signing.show(key))


def rotate_secret(session: Session, user_id: uuid.UUID, overlap_s: int) -> SecretOut:
    """A new secret; the one it replaces keeps signing ``overlap_s`` seconds beside it (the
    ``webhook-signature`` header holds both signatures meanwhile)."""
    repository.lock_secrets(session, user_id)
    repository.retire_secrets(session, user_id, overlap_s)
    repository.add_secret(session, user_id)
    key = repository.current_secret(session, user_id)
    assert key is not None
    return SecretOut(key=signing.show(key))


def _own_job(session: Session, user_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Only the job's requester (whose webhook it is) sees its deliveries."""
    if repository.job_owner(session, job_id) != user_id:
        raise NotFound("job")


def deliveries_page(
    session: Session, user_id: uuid.UUID, job_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[DeliveryOut]:
    """The job's webhook deliveries, oldest first, each with its attempts."""
    _own_job(session, user_id, job_id)
    rows = repository.messages(session, job_id, limit + 1, decode(cursor, datetime, uuid.UUID))
    items, next_cursor = cut(rows, limit, lambda row: (row["created_at"], row["id"]))
    found = repository.attempts(session, [row["id"] for row in items])
    return Page[DeliveryOut](
        items=[DeliveryOut.of(row, found.get(row["id"], [])) for row in items], next_cursor=next_cursor
    )


def redeliver(session: Session, user_id: uuid.UUID, job_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryOut:
    """One more attempt of the delivery, outside its schedule, with the same webhook-id and
    body (asking again while one is pending changes nothing; a delivery not attempted yet is
    about to be)."""
    _own_job(session, user_id, job_id)
    row = repository.request_redelivery(session, job_id, delivery_id)
    if row is None:
        raise NotFound("delivery")
    return DeliveryOut.of(row, repository.attempts(session, [row["id"]]).get(row["id"], []))


@dataclass(frozen=True)
class AbsoluteSigner(UrlSigner):
    """Signed links that are absolute (a webhook's receiver has no base to resolve a relative
    link against): a link the storage makes relative (local files, ``VTO_PUBLIC_BASE_URL``
    unset) is resolved against ``base_url``."""

    base_url: str = "http://127.0.0.1:8000"

    def __call__(self, key: str | None) -> str:
        link = super().__call__(key)
        return link if not link or urlsplit(link).scheme else urljoin(self.base_url.rstrip("/") + "/", link)


def job_renderer(
    engine: Engine, storage: Storage, link_ttl_s: int, base_url: str
) -> Callable[[uuid.UUID], Mapping[str, Any] | None]:
    """What the webhook dispatcher puts in a webhook's ``data``: the job as
    ``GET /vto/jobs/{id}`` shows it (its read model row, ``JobOut``), with absolute links
    signed for ``link_ttl_s``; None while the read model does not have the job."""
    sessions = make_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))  # one round trip
    sign = AbsoluteSigner(storage, link_ttl_s, base_url)

    def render(job_id: uuid.UUID) -> Mapping[str, Any] | None:
        with sessions() as session:
            job = jobs.job(session, job_id, sign)
        return None if job is None else job.model_dump(mode="json")

    return render
