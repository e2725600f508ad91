"""What the API process holds: settings, database, ledger, projections, storage.

Built once by ``build_services`` and kept on ``app.state.services``; endpoints reach it through
the ``Annotated`` dependencies in ``command_api.deps``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from command_api.auth.oauth import OAuthProviders
from command_api.ops.metrics import MAIL_FAILURES, READ_YOUR_WRITES_WAIT
from command_api.own_reads import READ_MODELS
from infra.database import database_url
from infra.ledger_store import ledger_pool, postgres_ledger
from infra.mail import Mailer, mailer_from_settings
from infra.migrate import upgrade
from infra.orm import engine_from_settings, make_sessionmaker
from infra.settings import Settings, jwt_secret
from infra.storage import Storage, storage_from_settings
from ledger.application import LedgerApplication
from projections.runner import Pace, Projector
from projections.wait import Nudge, PositionWatcher

# How long a reader's nudge to the projections (``Nudge``) waits for a ledger connection: a
# busy pool skips it, and the reader's wait lasts up to ``projection_batch_interval_s``.
NUDGE_POOL_TIMEOUT_S = 0.01


@dataclass
class Services:
    settings: Settings
    url: str
    engine: Engine
    sessions: sessionmaker  # type: ignore[type-arg]
    ledger: LedgerApplication
    storage: Storage
    secret: str
    oauth: OAuthProviders  # the social-login providers; tests set its ``transport``
    mailer: Mailer  # SMTP (VTO_SMTP_URL) or .eml files under data_dir/mail
    projector: Projector | None = None  # projections run in this process ...
    watcher: PositionWatcher | None = None  # ... or another runs them and this one follows
    nudge: Nudge | None = None  # tells the runners a reader waits (None: they do not listen)
    # The time of the API-key rate limits and last_used_at; None: the database's (every
    # replica shares it). Tests set a clock they move by hand.
    clock: Callable[[], datetime] | None = None

    def wait_for(self, position: int | None, timeout: float | None = None) -> bool:
        """Read-your-writes: wait until the read models include ``position`` (at most the
        setting ``read_your_writes_timeout_s``). How long it waited is observed in
        ``vto_read_your_writes_wait_seconds`` (0 when there was nothing to wait for)."""
        timeout = self.settings.read_your_writes_timeout_s if timeout is None else timeout
        follower = self.projector if self.projector is not None else self.watcher
        assert follower is not None  # build_services starts one or the other
        if position is None or follower.position() >= position:
            READ_YOUR_WRITES_WAIT.observe(0.0)
            return True
        started = time.perf_counter()
        if self.nudge is not None:
            self.nudge.want(position)
        try:
            return follower.wait_for(position, timeout)
        finally:
            READ_YOUR_WRITES_WAIT.observe(time.perf_counter() - started)

    def close(self) -> None:
        if self.projector is not None:
            self.projector.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self.ledger.close()
        self.engine.dispose()


def build_services(
    settings: Settings, url: str | None = None, *, migrate: bool = True, run_projections: bool = True
) -> Services:
    url = url or database_url(settings)
    if migrate:
        upgrade(url)
    engine = engine_from_settings(url, settings)
    secret = jwt_secret(settings)
    services = Services(
        settings=settings,
        url=url,
        engine=engine,
        sessions=make_sessionmaker(engine),
        ledger=postgres_ledger(settings, url),
        storage=storage_from_settings(settings),
        secret=secret,
        oauth=OAuthProviders(settings, secret),
        mailer=mailer_from_settings(settings, on_failure=MAIL_FAILURES.inc),
    )
    if run_projections:
        services.projector = Projector.configured(url, settings).start()
    else:
        services.watcher = PositionWatcher(url, READ_MODELS).start()
    if Pace.of(settings.projection_batch_interval_s, settings.projection_wanted_batch_interval_s).listens:
        pool = ledger_pool(services.ledger)
        services.nudge = Nudge(lambda: pool.connection(timeout=NUDGE_POOL_TIMEOUT_S))
    return services
