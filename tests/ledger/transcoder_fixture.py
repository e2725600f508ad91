"""The fixture of stored events that ``test_transcoding`` replays: a few accounts' events and
snapshots, encoded by eventsourcing's own ``JSONTranscoder`` (with the ledger's transcodings),
as the ledger stored them before its transcoder was ``OrjsonTranscoder``.

    uv run --frozen python -m tests.ledger.transcoder_fixture   # writes FIXTURE again

Random histories (``tests.projections.history``) and one account whose events hold what is
unusual in JSON: text in many scripts, quotes, escapes and control characters, integers beyond
64 bits, floats small, large and negative, nested objects and lists."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    StoredEvent,
    Transcoder,
    UUIDAsHex,
)

from infra.ledger_store import MEMORY_ENV, ledger_options
from infra.settings import Settings
from ledger.account import Account
from ledger.application import LedgerApplication
from tests.projections.history import random_history

FIXTURE = Path(__file__).parent / "fixtures" / "stored_events_json_transcoder.jsonl"
ODD_USER = UUID("0b7c1e52-8d3a-4f61-9e2b-5a4c3d2e1f00")
AT = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)


def json_transcoder() -> JSONTranscoder:
    """eventsourcing's transcoder with the ledger's transcodings (what it stored with)."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


class _JSONLedger(LedgerApplication):
    def construct_transcoder(self) -> Transcoder:
        return json_transcoder()


def _odd_account(app: LedgerApplication) -> None:
    account = Account.open(ODD_USER, AT)
    account.grant_credits(40, 'café ☕ 😀 — "quoted" \\ back\tslash\nline \u2028 \x01 \x7f', AT, by="ops")
    account.grant_tickets("video", 2, "ünïcödé", AT + timedelta(seconds=1))
    request: dict[str, Any] = {
        "project_id": "p-1",
        "product_ids": ["한국어", "日本語", "עברית"],
        "options": {
            "seed": 2**70,
            "negative": -(2**65),
            "edge": 2**63 - 1,
            "strength": 0.75,
            "tiny": 1e-05,
            "huge": 1.5e300,
            "minus": -0.0,
            "nested": {"deep": [[1, [2, {"x": None}]], {}, [], True, False]},
        },
        "pose": None,
    }
    job = UUID("5d7c0f1e-2b3a-4c5d-8e9f-a0b1c2d3e4f5")
    account.request_job(
        job, "image", request, app.policy, AT + timedelta(seconds=2), "key-ü", timedelta(days=1)
    )
    outputs = [{"storage_key": "outputs/a b.png", "media_type": "image/png", "width": 768, "duration": 2.5}]
    account.complete_job(job, outputs, AT + timedelta(seconds=3))
    failed = UUID("6e8d1f2a-3c4b-4d6e-9fa0-b1c2d3e4f5a6")
    account.request_job(
        failed, "video", {"project_id": "p-2"}, app.policy, AT + timedelta(seconds=4), None, timedelta(days=1)
    )
    account.fail_job(failed, {"code": "generator_error", "message": "boom: ошибка", "retryable": False}, AT)
    app.save(account)


def stored(app: LedgerApplication) -> list[tuple[str, StoredEvent]]:
    """Every stored event of ``app`` (in log order), then every snapshot."""
    events = app.recorder.select_notifications(start=1, limit=1_000_000)
    users = sorted({e.originator_id for e in events}, key=str)
    rows: list[tuple[str, StoredEvent]] = [("event", e) for e in events]
    if app.snapshots is not None:
        for user in users:
            rows.extend(("snapshot", s) for s in app.snapshots.recorder.select_events(user))
    return rows


def main() -> None:
    settings = Settings(_env_file=None, snapshot_interval=20)  # type: ignore[call-arg]
    app = _JSONLedger(env=MEMORY_ENV, options=ledger_options(settings))
    random_history(app, users=6, events=240, seed=19)
    _odd_account(app)
    with FIXTURE.open("w", encoding="utf-8") as out:
        for kind, s in stored(app):
            line = {
                "kind": kind,
                "originator_id": str(s.originator_id),
                "originator_version": s.originator_version,
                "topic": s.topic,
                "state": s.state.decode("utf-8"),
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    app.close()


if __name__ == "__main__":
    main()
