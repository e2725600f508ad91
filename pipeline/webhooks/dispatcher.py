"""The webhook dispatcher of one process: the follower of the ledger, the progress watcher,
the sender and the balance alerts (``pipeline.balance_alerts``), started and stopped together
(``vto webhooks``, and inside ``vto serve``). Several processes may run one each against the
same database: the follower's tracking row, the watcher's row locks and the sender's leases
keep them from doing the same work twice."""

from __future__ import annotations

from dataclasses import dataclass

from infra.mail import mailer_from_settings
from infra.settings import Settings
from pipeline.balance_alerts import BalanceAlerts
from pipeline.webhooks.follower import NAME, ProgressWatcher, WebhookFollower
from pipeline.webhooks.sender import Render, SenderOptions, WebhookSender
from pipeline.webhooks.targets import AsyncResolve, resolve_async


@dataclass
class WebhookDispatcher:
    follower: WebhookFollower
    watcher: ProgressWatcher
    sender: WebhookSender
    alerts: BalanceAlerts

    @classmethod
    def build(
        cls, settings: Settings, url: str, render: Render, *, resolver: AsyncResolve = resolve_async
    ) -> WebhookDispatcher:
        """``render(job_id)``: the job as ``GET /vto/jobs/{id}`` shows it, with absolute signed
        links (the composition root passes the API's own view)."""
        return cls(
            follower=WebhookFollower(url, poll_interval=settings.webhook_poll_interval_s),
            watcher=ProgressWatcher(
                url,
                interval=settings.webhook_progress_interval_s,
                retention_days=settings.webhook_retention_days,
            ),
            sender=WebhookSender(url, render, SenderOptions.from_settings(settings), resolver=resolver),
            alerts=BalanceAlerts(
                url,
                mailer_from_settings(settings),
                interval=settings.balance_alert_interval_s,
                behind=("points", NAME),
            ),
        )

    def start(self) -> WebhookDispatcher:
        self.follower.start()
        self.watcher.start()
        self.sender.start()
        self.alerts.start()
        return self

    def stop(self) -> None:
        self.alerts.stop()
        self.sender.stop()
        self.watcher.stop()
        self.follower.stop()

    def __enter__(self) -> WebhookDispatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
