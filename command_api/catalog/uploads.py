"""How an upload runs (``POST /assets``, ``POST /projects/{id}/products``): the image is decoded
and re-encoded outside any database connection or lock, in a bounded pool, and each account has
a bounded number of uploads in progress.

An upload is three short steps, none holding what another needs:

1. ``caller``: the access token checked against the stored user (and, for products, access to
   the project) in a short transaction of its own, under the ``SessionGate`` like any request;
2. ``decode``: the bytes read and the image decoded, checked and re-encoded (``check_image``)
   on one of the process's ``upload_workers`` image threads: the others wait on the event
   loop, holding no thread, no connection and no lock, at most
   ``upload_queue_timeout_s`` (then 503 ``uploads_busy`` with Retry-After);
3. ``store_and_record``: the object stored, then its row added in a short transaction (which
   takes the project's lock for the product count); when the row cannot be added the object
   is deleted again.

Around steps 2 and 3 the caller holds one of its ``upload_max_concurrent_per_account`` slots
(429 ``too_many_uploads`` with Retry-After beyond that). The slots and the pool are per API
process, as the memory they protect is: an upload holds at most about 8 bytes a pixel of the
largest image accepted (``upload_max_pixels``), so a process's uploads hold at most
``upload_workers`` times that (docs/security-uploads-and-headers.md)."""

from __future__ import annotations

import asyncio
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any, BinaryIO, TypeVar

import anyio.to_thread
from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from command_api.catalog.images import CheckedImage, check_image, read_limited
from command_api.catalog.media import store
from command_api.deps import current_user, session_gate
from command_api.problems import DomainError
from command_api.services import Services
from infra.settings import Settings

T = TypeVar("T")

# What a client is told to wait: about one decode of a large image (429), or a turn of the
# pool when every worker stayed busy for the whole queue timeout (503).
RETRY_AFTER_TOO_MANY_S = 2
RETRY_AFTER_BUSY_S = 5


class TooManyUploads(DomainError):
    status, code = 429, "too_many_uploads"

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} uploads of one account may be in progress at once; retry shortly")
        self.headers = {"Retry-After": str(RETRY_AFTER_TOO_MANY_S)}


class UploadsBusy(DomainError):
    status, code = 503, "uploads_busy"

    def __init__(self) -> None:
        super().__init__("every image worker is busy; retry shortly")
        self.headers = {"Retry-After": str(RETRY_AFTER_BUSY_S)}


class UploadLimits:
    """The uploads of one API process: each account's uploads in progress, and the pool that
    decodes them: ``workers`` threads of their own (so that the memory an image needs is taken
    and given back by the same few threads, whose allocator arenas it is reused from), a turn
    waited for on the event loop (one semaphore per event loop; a test client runs its own)."""

    def __init__(self, workers: int, per_account: int, queue_timeout_s: float) -> None:
        self.workers = workers
        self.per_account = per_account
        self.queue_timeout_s = queue_timeout_s
        self._lock = threading.Lock()
        self._in_progress: dict[uuid.UUID, int] = {}
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            settings.upload_workers,
            settings.upload_max_concurrent_per_account,
            settings.upload_queue_timeout_s,
        )

    def in_progress(self, user_id: uuid.UUID) -> int:
        with self._lock:
            return self._in_progress.get(user_id, 0)

    @contextmanager
    def account_slot(self, user_id: uuid.UUID) -> Iterator[None]:
        """One of the account's upload slots for the block; ``TooManyUploads`` (429) when it
        holds them all."""
        with self._lock:
            held = self._in_progress.get(user_id, 0)
            if held >= self.per_account:
                raise TooManyUploads(self.per_account)
            self._in_progress[user_id] = held + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._in_progress[user_id] - 1
                if left:
                    self._in_progress[user_id] = left
                else:
                    del self._in_progress[user_id]

    async def run(self, work: Callable[[], T]) -> T:
        """``work`` on a worker thread, at most ``workers`` at a time; ``UploadsBusy`` (503)
        when no turn comes within the queue timeout."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools.setdefault(loop, asyncio.Semaphore(self.workers))
        try:
            await asyncio.wait_for(pool.acquire(), self.queue_timeout_s)
        except TimeoutError:
            raise UploadsBusy() from None
        try:
            return await loop.run_in_executor(self._threads, work)
        finally:
            pool.release()


def upload_limits(request: Request, services: Services) -> UploadLimits:
    limits: UploadLimits | None = getattr(request.app.state, "upload_limits", None)
    if limits is None:
        limits = UploadLimits.from_settings(services.settings)
        request.app.state.upload_limits = limits
    return limits


async def in_transaction(request: Request, services: Services, work: Callable[[Session], T]) -> T:
    """``work`` in a short transaction of its own on a worker thread (committed when it
    returns, rolled back when it raises), under the ``SessionGate``."""
    semaphore = await session_gate(request, services).acquire()
    try:
        return await anyio.to_thread.run_sync(partial(_transact, services, work))
    finally:
        semaphore.release()


def _transact(services: Services, work: Callable[[Session], T]) -> T:
    with services.sessions() as session, session.begin():
        return work(session)


async def caller(
    request: Request,
    services: Services,
    credentials: HTTPAuthorizationCredentials | None,
    check: Callable[[Session, uuid.UUID], object] | None = None,
) -> uuid.UUID:
    """The caller's id (the token checked as every route checks it), after ``check`` (e.g.
    access to the project), in one short transaction."""

    def work(session: Session) -> uuid.UUID:
        user = current_user(services, session, credentials)
        if check is not None:
            check(session, user.id)
        return user.id

    return await in_transaction(request, services, work)


async def decode(limits: UploadLimits, upload: BinaryIO, settings: Settings) -> CheckedImage:
    """The upload's bytes (413 past ``max_upload_bytes``) decoded, checked and re-encoded in
    the pool."""

    def work() -> CheckedImage:
        return check_image(read_limited(upload, settings.max_upload_bytes), settings.upload_max_pixels)

    return await limits.run(work)


async def store_and_record(
    request: Request,
    services: Services,
    prefix: str,
    image: CheckedImage,
    record: Callable[[Session, uuid.UUID, dict[str, Any]], T],
) -> T:
    """Stores ``image`` as ``<prefix>/<new id>.<ext>``, then ``record(session, id, columns)``
    in a short transaction; when that fails the stored object is deleted again."""
    object_id = uuid.uuid4()
    columns = await anyio.to_thread.run_sync(store, services.storage, prefix, object_id, image)
    try:
        return await in_transaction(request, services, lambda session: record(session, object_id, columns))
    except BaseException:
        await anyio.to_thread.run_sync(services.storage.delete, columns["storage_key"])
        raise
