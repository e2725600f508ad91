"""The sender: delivers the due webhook messages, signed, and schedules their retries.

It runs an asyncio loop in a thread of its own. Each round it chooses due messages fairly:
every account with messages pending is looked at (``store.CANDIDATES``), accounts take turns,
and no account has more than ``webhook_max_in_flight_per_account`` attempts in progress in
this process, out of ``webhook_max_in_flight``. A message is leased (for twice the attempt
timeout, and a margin) so that senders in other processes leave it alone; a sender that dies
holding one leaves it to be sent again when the lease ends, with the same ``webhook-id``.

An attempt: the body (rendered once, from the job as ``GET /vto/jobs/{id}`` shows it, then
kept, so every attempt sends the same bytes), signed with every secret of the account still in
force, posted through ``CheckedTransport`` (the target's addresses checked again) with at most
``webhook_timeout_s`` for all of it, no redirect followed, at most
``webhook_response_max_bytes`` of the answer read. Then the attempt is logged and the
message moves on, in one transaction with the other attempts that ended meanwhile (a group
commit): 2xx delivered; 410 stopped, and every later message to that
URL for a job ordered before then stopped too; anything else (a status, a timeout, a refused
address, a connection error) retried after the next delay of the schedule (with jitter),
or, for 429, 502, 503 and 504, after ``Retry-After`` when that is later; failed once the
schedule is over. A redelivery someone asked for is one more attempt, outside the schedule.

Wakes on ``NOTIFY webhook_messages`` (new messages, redeliveries) and on the commits of the
``jobs`` projection (a message waits until the job read model shows its event), at the next
due time, and polls every ``webhook_poll_interval_s`` whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import psycopg
from psycopg_pool import AsyncConnectionPool

from infra.settings import Settings
from infra.threads import BackgroundLoop
from pipeline.webhooks import metrics, signing, store
from pipeline.webhooks.events import body as message_body
from pipeline.webhooks.events import webhook_id
from pipeline.webhooks.store import Attempt, Candidate, Leased, Recorded
from pipeline.webhooks.targets import AsyncResolve, CheckedTransport, TargetNotAllowed, resolve_async
from projections import tracking
from projections.events import TRACKING_CHANNEL

log = logging.getLogger(__name__)

# The job as GET /vto/jobs/{id} shows it (absolute, signed links); None: not in the read model.
Render = Callable[[uuid.UUID], Mapping[str, Any] | None]

THROTTLED = frozenset({429, 502, 503, 504})  # statuses whose Retry-After is honoured
RETRY_AFTER_MAX_S = 24 * 3600.0  # a longer Retry-After is taken as a day
USER_AGENT = "VTO-Webhooks/1.0 (+https://www.standardwebhooks.com)"
NOT_RENDERED_RETRY_S = 1.0  # a message whose job is not in the read model yet waits this long
ROUND_GAP_S = 0.005  # wake-ups closer than this are taken together
STATS_EVERY_S = 1.0
RECORD_BATCH = 500  # outcomes committed together at most


@dataclass(frozen=True)
class SenderOptions:
    schedule: tuple[float, ...]
    jitter: float
    timeout: float
    response_max_bytes: int
    max_in_flight: int
    max_in_flight_per_account: int
    poll_interval: float
    allow_private: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> SenderOptions:
        return cls(
            schedule=tuple(settings.webhook_retry_schedule_s),
            jitter=settings.webhook_retry_jitter,
            timeout=settings.webhook_timeout_s,
            response_max_bytes=settings.webhook_response_max_bytes,
            max_in_flight=settings.webhook_max_in_flight,
            max_in_flight_per_account=settings.webhook_max_in_flight_per_account,
            poll_interval=settings.webhook_poll_interval_s,
            allow_private=settings.webhook_allow_private_networks,
        )

    @property
    def lease_s(self) -> float:
        return 2 * self.timeout + 5


@dataclass(frozen=True)
class Outcome:
    """What one attempt got."""

    result: str  # success, gone, http_status, timeout, network, refused
    status_code: int | None
    error: str | None
    response_body: str | None
    retry_after: float | None
    duration_ms: int


def retry_after(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` value (seconds, or an HTTP date) as seconds from ``now``; None when
    absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def choose(
    candidates: Sequence[Candidate], in_flight: Mapping[uuid.UUID, int], per_account: int, free: int
) -> list[Candidate]:
    """Up to ``free`` candidates, accounts taking turns (in the order of their oldest due
    message), each up to its room under ``per_account``."""
    queues: dict[uuid.UUID, list[Candidate]] = {}
    for candidate in candidates:
        queues.setdefault(candidate.user_id, []).append(candidate)
    room = {user: per_account - in_flight.get(user, 0) for user in queues}
    chosen: list[Candidate] = []
    seen: set[uuid.UUID] = set()
    while len(chosen) < free:
        progressed = False
        for user, queue in queues.items():
            if len(chosen) >= free:
                break
            while queue and queue[0].id in seen:
                queue.pop(0)
            if queue and room[user] > 0:
                candidate = queue.pop(0)
                seen.add(candidate.id)
                chosen.append(candidate)
                room[user] -= 1
                progressed = True
        if not progressed:
            break
    return chosen


class AccountClients:
    """An HTTP client per account with attempts in progress, each with its own small pool of
    kept-alive connections (at most the account's limit of attempts at once): the pool of one
    account never waits on another's connections, and httpcore's pool, which scans all its
    connections for each request, stays small. Clients of accounts with nothing in flight are
    closed, oldest first, beyond ``keep``."""

    def __init__(self, options: SenderOptions, resolver: AsyncResolve, keep: int = 256) -> None:
        self.options = options
        self.resolver = resolver
        self.keep = keep
        self.ssl_context = httpx.create_ssl_context()  # loading the CA bundle once
        self._clients: OrderedDict[uuid.UUID, httpx.AsyncClient] = OrderedDict()

    def of(self, user_id: uuid.UUID) -> httpx.AsyncClient:
        client = self._clients.get(user_id)
        if client is None:
            transport = CheckedTransport(
                self.options.allow_private,
                resolver=self.resolver,
                max_connections=self.options.max_in_flight_per_account,
                ssl_context=self.ssl_context,
            )
            client = self._clients[user_id] = httpx.AsyncClient(
                transport=transport,
                follow_redirects=False,
                timeout=httpx.Timeout(self.options.timeout),
                trust_env=False,
                headers={"user-agent": USER_AGENT},
            )
        self._clients.move_to_end(user_id)
        return client

    async def trim(self, in_flight: Mapping[uuid.UUID, int]) -> None:
        idle = [user for user in self._clients if not in_flight.get(user)]
        for user in idle[: max(0, len(self._clients) - self.keep)]:
            await self._clients.pop(user).aclose()

    async def aclose(self) -> None:
        while self._clients:
            await self._clients.popitem()[1].aclose()


class WebhookSender(BackgroundLoop):
    def __init__(
        self,
        url: str,
        render: Render,
        options: SenderOptions,
        *,
        resolver: AsyncResolve = resolve_async,
        render_threads: int = 2,
    ) -> None:
        super().__init__("webhook-sender", stop_timeout=options.timeout + 10)
        self.url = url
        self.render = render
        self.options = options
        self.resolver = resolver
        self.render_threads = render_threads
        self.in_flight: Counter[uuid.UUID] = Counter()
        self.sent = 0  # attempts made by this sender (tests, benchmarks)
        self.errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._records: asyncio.Queue[tuple[Recorded, asyncio.Future[None]]] | None = None
        self._stats_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> None:
        asyncio.run(self._main())

    def stop(self, timeout: float | None = None) -> None:
        self.stop_event.set()
        self._poke()
        super().stop(timeout)

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(wake.set)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._records = asyncio.Queue()
        renderer = ThreadPoolExecutor(self.render_threads, thread_name_prefix="webhook-render")
        pool = AsyncConnectionPool(
            self.url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False, name="webhook-sender"
        )
        client = AccountClients(self.options, self.resolver)
        listener: asyncio.Task[None] | None = None
        recorder: asyncio.Task[None] | None = None
        try:
            await pool.open(wait=False)
            listener = asyncio.create_task(self._listen())
            recorder = asyncio.create_task(self._record_loop(pool))
            failures = 0
            while not self.stopping:
                self._wake.clear()
                try:
                    delay = await self._round(pool, client, renderer)
                    failures = 0
                except Exception:  # the database, or rendering a body: logged, retried
                    failures += 1
                    self.errors += 1
                    log.exception("webhooks: a round failed; retrying (leased messages come back later)")
                    delay = min(self.options.poll_interval, 0.05 * 2**failures)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, delay))
                await asyncio.sleep(ROUND_GAP_S)
        finally:
            if listener is not None:
                listener.cancel()
            await self._drain()
            if recorder is not None:
                recorder.cancel()
            await client.aclose()
            await pool.close()
            renderer.shutdown(wait=False, cancel_futures=True)

    async def _drain(self) -> None:
        """Let the attempts in progress end (at most the attempt timeout); whatever is cut
        short keeps its lease and is sent again when the lease ends."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.options.timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _listen(self) -> None:
        """Wake on new messages and redeliveries, and on the job read model's commits."""
        while not self.stopping:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {store.CHANNEL}")
                    await conn.execute(f"LISTEN {TRACKING_CHANNEL}")
                    assert self._wake is not None
                    self._wake.set()  # anything NOTIFYed before LISTEN is found by a round
                    async for notice in conn.notifies():
                        if (
                            notice.channel == store.CHANNEL
                            or tracking.notice(notice.payload)[0] == store.JOBS_PROJECTION
                        ):
                            self._wake.set()
            except psycopg.Error as exc:
                log.warning("webhooks: LISTEN connection lost (%s); polling meanwhile", exc)
                await asyncio.sleep(self.options.poll_interval)

    # ------------------------------------------------------------------ rounds
    async def _round(
        self, pool: AsyncConnectionPool[Any], client: AccountClients, renderer: ThreadPoolExecutor
    ) -> float:
        """Claims what is due and starts its attempts; returns how long to wait at most."""
        options = self.options
        busy = [user for user, count in self.in_flight.items() if count >= options.max_in_flight_per_account]
        free = options.max_in_flight - sum(self.in_flight.values())
        async with pool.connection() as conn:
            if time.monotonic() - self._stats_at >= STATS_EVERY_S:
                self._stats_at = time.monotonic()
                metrics.show(*await store.pending_stats(conn))
            if free > 0:
                candidates = await store.redeliveries(conn, free)
                candidates += await store.candidates(conn, options.max_in_flight_per_account, busy)
                chosen = choose(candidates, self.in_flight, options.max_in_flight_per_account, free)
                leased = await store.lease(conn, [c.id for c in chosen], options.lease_s) if chosen else []
                if leased:
                    await self._prepare(conn, leased, client, renderer)
                busy = [
                    u for u, count in self.in_flight.items() if count >= options.max_in_flight_per_account
                ]
            await client.trim(self.in_flight)
            if sum(self.in_flight.values()) >= options.max_in_flight:
                return options.poll_interval  # a finished attempt wakes the loop
            due = await store.next_due_in(conn, busy)
        return options.poll_interval if due is None else min(options.poll_interval, max(due, 0.0))

    async def _prepare(
        self,
        conn: psycopg.AsyncConnection[Any],
        leased: list[Leased],
        client: AccountClients,
        renderer: ThreadPoolExecutor,
    ) -> None:
        """Stops the messages of endpoints gone since their job was ordered; renders the bodies
        not rendered yet (together, kept in one statement); starts the attempts."""
        gone = await store.gone_since(conn, ((m.user_id, m.url) for m in leased))
        keys = await store.signing_keys(conn, (m.user_id for m in leased))
        sendable = []
        for message in leased:
            gone_at = gone.get((message.user_id, message.url))
            if gone_at is not None and message.requested_at < gone_at and not message.manual:
                stopped = Recorded(message, None, "stopped", message.attempts, None)
                self._track(message, self._record(stopped))
                metrics.DELIVERIES.labels("stopped").inc()
            else:
                sendable.append(message)
        unrendered = [m for m in sendable if m.body is None]
        if unrendered:
            loop = asyncio.get_running_loop()
            data = await asyncio.gather(
                *(loop.run_in_executor(renderer, self.render, m.job_id) for m in unrendered),
                return_exceptions=True,
            )
            bodies = {}
            for message, found in zip(unrendered, data, strict=True):
                if isinstance(found, BaseException):
                    self.errors += 1
                    log.error("webhooks: cannot render job %s; later", message.job_id, exc_info=found)
                elif found is None:
                    log.warning("webhooks: job %s is not in the read model yet; later", message.job_id)
                else:
                    bodies[message.id] = message_body(message.event_type, message.event_at, found)
            stored = await store.store_bodies(conn, bodies)
            later = [m.id for m in unrendered if m.id not in stored]
            if later:  # only these wait; the others of the round go on
                await store.postpone(conn, later, NOT_RENDERED_RETRY_S)
            for message in unrendered:
                message.body = stored.get(message.id)
        for message in sendable:
            if message.body is not None:
                self._track(
                    message,
                    self._attempt(
                        message, message.body, keys.get(message.user_id, []), client.of(message.user_id)
                    ),
                )

    def _track(self, message: Leased, work: Coroutine[Any, Any, None]) -> None:
        """Runs ``work`` for ``message``, counted in flight for its account until it ends."""
        self.in_flight[message.user_id] += 1
        metrics.IN_FLIGHT.inc()
        task = asyncio.create_task(work)
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self.in_flight[message.user_id] -= 1
            if self.in_flight[message.user_id] <= 0:
                del self.in_flight[message.user_id]
            metrics.IN_FLIGHT.dec()
            if self._wake is not None:
                self._wake.set()
            if not finished.cancelled() and finished.exception() is not None:
                self.errors += 1
                log.error("webhooks: attempt of %s failed", message.id, exc_info=finished.exception())

        task.add_done_callback(done)

    # ------------------------------------------------------------------ records
    async def _record(self, outcome: Recorded) -> None:
        """Waits until ``outcome`` is committed (with the others that ended meanwhile)."""
        assert self._records is not None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._records.put((outcome, future))
        await future

    async def _record_loop(self, pool: AsyncConnectionPool[Any]) -> None:
        """Commits the outcomes in groups: all that ended while the previous group was written,
        in one transaction (a commit per attempt would make the database's flushes the limit)."""
        assert self._records is not None
        while True:
            batch = [await self._records.get()]
            while len(batch) < RECORD_BATCH and not self._records.empty():
                batch.append(self._records.get_nowait())
            try:
                async with pool.connection() as conn:
                    await store.record(conn, [outcome for outcome, _ in batch])
            except Exception as exc:  # noqa: BLE001 - raised in each attempt (logged); leases bring them back
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    # ------------------------------------------------------------------ one attempt
    async def _attempt(
        self, message: Leased, body: str, keys: list[bytes], client: httpx.AsyncClient
    ) -> None:
        at = datetime.now(UTC)
        outcome = await self._post(client, message, body.encode(), keys)
        metrics.ATTEMPTS.labels(outcome.result).inc()
        metrics.ATTEMPT_SECONDS.observe(outcome.duration_ms / 1000)
        self.sent += 1
        attempt = Attempt(
            at, outcome.status_code, outcome.duration_ms, outcome.error, outcome.response_body, message.manual
        )
        state, attempts, retry_in = self._next(message, outcome)
        gone, back = outcome.result == "gone", message.manual and outcome.result == "success"
        await self._record(Recorded(message, attempt, state, attempts, retry_in, gone, back))
        if state != message.state and state != "pending":
            metrics.DELIVERIES.labels(state).inc()

    def _next(self, message: Leased, outcome: Outcome) -> tuple[str, int, float | None]:
        """The message's state, automatic attempts made and seconds to the next one."""
        if outcome.result == "success":
            return "delivered", message.attempts + (0 if message.manual else 1), None
        if outcome.result == "gone":
            state = "stopped" if message.state == "pending" else message.state
            return state, message.attempts + (0 if message.manual else 1), None
        if message.manual:  # outside the schedule: the message stays as it was
            return message.state, message.attempts, None
        attempts = message.attempts + 1
        if attempts >= len(self.options.schedule):
            return "failed", attempts, None
        delay = self.options.schedule[attempts]
        if self.options.jitter:
            delay *= 1 + random.uniform(-self.options.jitter, self.options.jitter)
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, RETRY_AFTER_MAX_S))
        return "pending", attempts, delay

    async def _post(
        self, client: httpx.AsyncClient, message: Leased, body: bytes, keys: list[bytes]
    ) -> Outcome:
        ident = webhook_id(message.id)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",  # the response is read raw, up to a limit
            "webhook-id": ident,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.signature_header(keys, ident, timestamp, body),
        }
        limit = self.options.response_max_bytes
        started = time.monotonic()

        def outcome(
            result: str,
            status: int | None,
            error: str | None,
            read: bytes | None = None,
            wait: float | None = None,
        ) -> Outcome:
            text = None if read is None else read.decode("utf-8", errors="replace")
            return Outcome(result, status, error, text, wait, round((time.monotonic() - started) * 1000))

        if not keys:
            return outcome("refused", None, "the account has no signing secret")
        try:
            async with asyncio.timeout(self.options.timeout):
                async with client.stream("POST", message.url, content=body, headers=headers) as response:
                    read = bytearray()
                    if limit:
                        async for chunk in response.aiter_raw():
                            read += chunk[: limit - len(read)]
                            if len(read) >= limit:
                                break
                    status = response.status_code
                    waited = (
                        retry_after(response.headers.get("retry-after"), datetime.now(UTC))
                        if status in THROTTLED
                        else None
                    )
        except TimeoutError:
            return outcome("timeout", None, f"no answer within {self.options.timeout:g} s")
        except TargetNotAllowed as exc:
            return outcome("refused", None, str(exc))
        except httpx.TimeoutException:
            return outcome("timeout", None, f"no answer within {self.options.timeout:g} s")
        except httpx.HTTPError as exc:
            return outcome("network", None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
        if 200 <= status < 300:
            return outcome("success", status, None, bytes(read))
        if status == 410:
            return outcome("gone", status, "410 Gone: the endpoint no longer wants webhooks", bytes(read))
        if 300 <= status < 400:
            where = response.headers.get("location", "")
            error = f"redirects are not followed ({status} to {where[:200]})"
            return outcome("http_status", status, error, bytes(read))
        return outcome("http_status", status, f"the endpoint answered {status}", bytes(read), waited)
