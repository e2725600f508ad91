"""This project against the PRD's flow written plainly, loaded alternately by ``wrk`` in one run.

    uv run --frozen python benchmarks/jobs_vs_prd.py [--duration 20] [--workers 1 2] [--users 1000]
        [--cells post-1 post-16 ...] [--gallery 3] [--json FILE]

Needs ``wrk`` (Debian/Ubuntu: ``apt-get install wrk``; a Python load generator would eat the
CPU being measured). Starts an embedded PostgreSQL in a temporary directory and, on it:

- ours: the migrated database, ``vto api --workers N`` and ``vto projector`` (reads wait until
  the projections include the caller's own writes: read-your-writes). The outbox relay, Kafka
  and the generator workers are not on the path of a request and do not run;
- theirs (``benchmarks/prd_flow/app.py``): a database ``prd_flow`` on the same server, served
  by ``uvicorn --workers N --loop uvloop --http httptools`` (what ``vto api`` runs).

Both sides are deployed once for each ``--workers`` N (1 and 2 by default: what compose
deploys), both sides always with the same N, each N on a PostgreSQL server of its own with
fresh data; every deployment is up from the start, and each cell loads them all in turn (below),
so that ours at N=2 is compared with ours at N=1 under the same machine conditions too. With
N > 1 the kernel spreads wrk's connections over the worker processes, so the one-user cells
order one user's jobs through every process at once.

Both get the same users (ids, projects, access tokens signed with one secret; ``--users``),
``CREDITS`` credits each (no request is refused for want of points) and ``--gallery``
finished jobs with one output each per project. Each cell loads the sides of every N in
turn, ``--rounds`` times each (N=1 ours, N=1 theirs, N=2 ours, N=2 theirs, then the same in
reverse, ...: ``--duration`` split between the rounds, so that a machine whose speed drifts
favours neither side nor any N; each load waits until no server runs autovacuum; their
figures are added up, p50 the rounds' mean weighted by their requests, p99 the highest), with
``wrk`` (script ``benchmarks/wrk/requests.lua``, the same for both; requests go round-robin over
the cell's users): ``POST /api/v1/vto/jobs`` (no Idempotency-Key: each request is a new job) at
1, 16 and 64 connections over all users and at 16 and 64 on one user, then ``GET /points``,
``GET /vto/jobs/{id}`` (each user's newest job, created by the POST cells) and
``GET /vto/projects/{id}/results`` (the gallery, 50 items at most) at 16 and 64 connections.

CPU per request: user + system CPU of the side's server processes (the API's uvicorn
processes, ours' projector, and every process of the N's PostgreSQL server: the server is
shared by the sides, which run one at a time) over the cell, divided by the requests wrk
completed; the log line of each cell splits it by part (``api``, ``projector``,
``postgres``). After each POST cell the side's ledger is checked: ours: no job reserved twice
(the event store), ``vto ledger audit`` exit 0; theirs: no job with two point_usage lines, each
balance = seeded minus its usage lines.

Prints one markdown table (ratio = ours / theirs in requests per second), the checks, and,
with ``--json FILE``, every figure as JSON. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa

from benchmarks.chaos import Postgres
from benchmarks.harness import SECRET, Processes, Seeded, seed, tree_cpu_seconds, wait_http
from benchmarks.prd_flow import app as prd
from infra.database import (
    embedded_postgres_pid,
    sqlalchemy_url,
)
from infra.ledger_store import postgres_ledger
from infra.migrate import upgrade
from infra.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "wrk" / "requests.lua"
CREDITS = 10_000_000
LOGS = Path(tempfile.gettempdir()) / "vto-jobs-vs-prd-logs"  # the servers' output, kept for reading
PRD_DATABASE = "prd_flow"
LOTS = 10  # lots held by each user of the lots comparison (issue 23): nine more grants
NO_WRK = (
    "wrk is not installed: this benchmark drives both sides with it. Install it "
    "(Debian/Ubuntu: sudo apt-get install wrk; macOS: brew install wrk) and run again."
)


@dataclass(frozen=True)
class Cell:
    name: str
    kind: str  # post | points | job | gallery
    connections: int
    one_user: bool = False
    lots: int = 0  # 1 or LOTS: the users of the lots comparison, holding that many lots each

    @property
    def label(self) -> str:
        what = {
            "post": "POST /vto/jobs",
            "points": "GET /points",
            "ryw": "POST /vto/jobs then GET /points",
            "job": "GET /vto/jobs/{id}",
            "gallery": "GET /vto/projects/{id}/results",
        }[self.kind]
        who = "one user" if self.one_user else "all users"
        if self.lots:
            who = f"{self.lots} lot{'s' if self.lots > 1 else ''} a user"
        return f"{what}, {self.connections} conn, {who}"


CELLS = [
    Cell("post-1", "post", 1),
    Cell("post-16", "post", 16),
    Cell("post-64", "post", 64),
    Cell("post-16-one", "post", 16, one_user=True),
    Cell("post-64-one", "post", 64, one_user=True),
    Cell("post-16-lots1", "post", 16, lots=1),
    Cell("post-16-lots10", "post", 16, lots=LOTS),
    Cell("ryw-16", "ryw", 16),
    Cell("points-16", "points", 16),
    Cell("points-64", "points", 64),
    Cell("job-16", "job", 16),
    Cell("job-64", "job", 64),
    Cell("gallery-16", "gallery", 16),
    Cell("gallery-64", "gallery", 64),
]


@dataclass
class Figures:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    first_non2xx: int
    cpu_s: float
    waits: Waits | None = None  # read-your-writes waits (ours, "ryw" cells)
    cpu_parts: dict[str, float] = field(default_factory=dict)  # cpu_s by part (Side.parts)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_s * 1000 / self.requests if self.requests else float("nan")


@dataclass
class Side:
    name: str
    base: str
    parts: Callable[[], dict[str, int]]  # the server processes whose CPU is counted, by part
    job_ids: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # user -> a job of theirs


# --- seeding ---------------------------------------------------------------------------------


def finish_gallery_jobs(url: str, seeded: list[Seeded], per_project: int) -> None:
    """Ours: ``per_project`` jobs per user requested and completed with one output each,
    through the ledger (what the ingestor does), so the gallery read model has rows."""
    ledger = postgres_ledger(Settings(), url)

    def one_user(who: Seeded) -> None:
        for _ in range(per_project):
            job_id = uuid.uuid4()
            request = {**who.body, "pose": "auto", "options": {}, "inputs": {}}
            ledger.request_job(who.user_id, job_id, "image", request)
            output = {"storage_key": f"results/{job_id}/0.png", "media_type": "image/png"}
            ledger.complete_job(who.user_id, job_id, [{**output, "width": 384, "height": 512}])

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one_user, seeded))
    finally:
        ledger.close()


def grant_more_lots(url: str, seeded: list[Seeded], lots: int) -> None:
    """``lots`` more lots for each user: grants of 100,000 credits, promotional and paid in
    turn, expiring 30 to 30 + ``lots`` days from now (none is burnt up or expires in a run)."""
    ledger = postgres_ledger(Settings(), url)
    now = datetime.now(UTC)

    def one_user(who: Seeded) -> None:
        for k in range(lots):
            category = "promotional" if k % 2 else "paid"
            expires = now + timedelta(days=30 + k)
            ledger.grant(who.user_id, "bench lot", credits=100_000, expires_at=expires, category=category)

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one_user, seeded))
    finally:
        ledger.close()


def prd_url(url: str) -> str:
    """The SQLAlchemy URL of the PRD side's database, created on the server of ``url``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PRD_DATABASE}")
        conn.execute(f"CREATE DATABASE {PRD_DATABASE}")
    return sa.make_url(sqlalchemy_url(url)).set(database=PRD_DATABASE).render_as_string(hide_password=False)


def seed_prd(engine: sa.Engine, seeded: list[Seeded], per_project: int) -> None:
    """The PRD side's tables with the same users and projects as ours, ``CREDITS`` each, and
    ``per_project`` finished jobs (charged one credit) with one result each per project."""
    prd.create_tables(engine)
    now = datetime.now(UTC)
    projects, rows, jobs, usage, results = [], [], [], [], []
    for who in seeded:
        project_id = uuid.UUID(who.body["project_id"])
        projects.append({"id": project_id, "owner_id": who.user_id, "name": "bench"})
        rows.append({"user_id": who.user_id, "credit": CREDITS - per_project})
        for k in range(per_project):
            job_id = uuid.uuid4()
            created = now - timedelta(seconds=per_project - k)
            jobs.append(
                {
                    "id": job_id,
                    "user_id": who.user_id,
                    "project_id": project_id,
                    "kind": "image",
                    "status": "succeeded",
                    "request": who.body,
                    "charge_source": "credit",
                    "charge_amount": 1,
                    "created_at": created,
                }
            )
            usage.append(
                {
                    "user_id": who.user_id,
                    "job_id": job_id,
                    "type": "deduction",
                    "source": "credit",
                    "amount": 1,
                    "balance_after": CREDITS - k - 1,
                    "reason": "image job",
                    "created_at": created,
                }
            )
            results.append(
                {
                    "job_id": job_id,
                    "project_id": project_id,
                    "storage_key": f"results/{job_id}/0.png",
                    "media_type": "image/png",
                    "width": 384,
                    "height": 512,
                    "created_at": created,
                }
            )
    with engine.begin() as conn:
        conn.execute(sa.insert(prd.projects), projects)
        conn.execute(sa.insert(prd.entitlements), [{**prd_defaults(), **r} for r in rows])
        for table, values in ((prd.vto_job, jobs), (prd.point_usage, usage), (prd.vto_result, results)):
            if values:
                conn.execute(sa.insert(table), values)


def prd_defaults() -> dict[str, Any]:
    return {
        "subscription_plan": None,
        "subscription_end": None,
        "daily_quota": None,
        "used_today": 0,
        "used_on": None,
        "lookbook_tickets": 0,
        "video_tickets": 0,
    }


def wait_projected(url: str, jobs: int, outputs: int, timeout: float = 300) -> None:
    """Until ours' read models hold ``jobs`` jobs and ``outputs`` gallery rows."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM vto_job), (SELECT count(*) FROM gallery)"
            ).fetchone()
            assert row is not None
            if row[0] >= jobs and row[1] >= outputs:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the projector did not catch up: {row} of {(jobs, outputs)}")
            time.sleep(0.5)


def newest_jobs(engine: sa.Engine, query: str) -> dict[uuid.UUID, uuid.UUID]:
    """Each user's newest job (their job ids for ``GET /vto/jobs/{id}``)."""
    with engine.connect() as conn:
        return {user: job for user, job in conn.exec_driver_sql(query).all()}


OUR_NEWEST = "SELECT DISTINCT ON (user_id) user_id, job_id FROM vto_job ORDER BY user_id, created_at DESC"
PRD_NEWEST = "SELECT DISTINCT ON (user_id) user_id, id FROM prd.vto_job ORDER BY user_id, created_at DESC"


# --- load ------------------------------------------------------------------------------------


def lua_string(text: str) -> str:
    assert text.isascii()
    return json.dumps(text)  # a JSON string of ASCII characters is a Lua string literal


def write_items(path: Path, cell: Cell, side: Side, seeded: list[Seeded]) -> None:
    """The wrk data file of ``cell``: one request per user, in turn (``seeded``: the cell's
    population)."""
    users = seeded[:1] if cell.one_user else seeded
    lines = ["items = {"]
    for who in users:
        body = "nil"
        if cell.kind == "ryw":  # an order, then a read that must show it (read-your-writes)
            order = lua_string(json.dumps(who.body, separators=(",", ":")))
            lines.append(
                f'  {{method = "POST", path = "/api/v1/vto/jobs", token = {lua_string(who.token)}, '
                f"body = {order}}},"
            )
            method, target = "GET", "/api/v1/points"
        elif cell.kind == "post":
            method, target = "POST", "/api/v1/vto/jobs"
            body = lua_string(json.dumps(who.body, separators=(",", ":")))
        elif cell.kind == "points":
            method, target = "GET", "/api/v1/points"
        elif cell.kind == "job":
            method, target = "GET", f"/api/v1/vto/jobs/{side.job_ids[who.user_id]}"
        else:
            method, target = "GET", f"/api/v1/vto/projects/{who.body['project_id']}/results"
        lines.append(
            f"  {{method = {lua_string(method)}, path = {lua_string(target)}, "
            f"token = {lua_string(who.token)}, body = {body}}},"
        )
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def run_wrk(base: str, data: Path, connections: int, seconds: float, threads: int) -> dict[str, Any]:
    command = [
        "wrk",
        f"-t{max(1, min(threads, connections))}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        base,
        "--",
        str(data),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 60)
    match = re.search(r"^WRK_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    return dict(json.loads(match.group(1)))


def quiesce(url: str, timeout: float = 120) -> None:
    """Let the previous cell's tail pass before the next load, the same for either side: wait
    until no autovacuum worker runs (they start after a cell's inserts, on either side's
    tables). No checkpoint is forced: the full-page writes after one would fall on the next
    cell, on the side measured first (docs/benchmarks.md)."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
        ).fetchone() != (0,):
            if time.monotonic() > deadline:
                print("autovacuum still running; measuring anyway", file=sys.stderr, flush=True)
                return
            time.sleep(0.2)


def measure(
    side: Side, cell: Cell, seeded: list[Seeded], work: Path, args: argparse.Namespace, urls: list[str]
) -> Figures:
    """One load of ``side`` by ``wrk``, once every server of ``urls`` (all the deployments
    running) is quiet."""
    data = work / f"{cell.name}-{side.name}.lua"
    write_items(data, cell, side, seeded)
    for url in urls:
        quiesce(url)
    time.sleep(args.settle)  # and a moment of rest
    parts = side.parts()
    # A read-your-writes cell: one connection per wrk thread, so each connection's read is sent
    # once its order was answered; ours' waits are read from its histogram before and after.
    threads = cell.connections if cell.kind == "ryw" else args.threads
    cpu_before = {part: tree_cpu_seconds([pid]) for part, pid in parts.items()}
    out = run_wrk(side.base, data, cell.connections, args.duration, threads)
    cpu_parts = {part: tree_cpu_seconds([pid]) - cpu_before[part] for part, pid in parts.items()}
    errors = sum(out[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return Figures(
        requests=out["requests"],
        seconds=out["duration_us"] / 1e6,
        p50_ms=out["p50_us"] / 1000,
        p99_ms=out["p99_us"] / 1000,
        non2xx=out["non2xx"],
        socket_errors=errors,
        first_non2xx=out["first_non2xx"],
        cpu_s=sum(cpu_parts.values()),
        cpu_parts=cpu_parts,
    )


def combined(rounds: list[Figures]) -> Figures:
    """A side's loads of one cell as one: counts, seconds and CPU added up; p50 the mean of the
    rounds' weighted by their requests, p99 the highest (wrk reports percentiles, not its
    samples, so they cannot be merged exactly)."""
    requests = sum(f.requests for f in rounds)
    parts: dict[str, float] = {}
    for f in rounds:
        for part, used in f.cpu_parts.items():
            parts[part] = parts.get(part, 0.0) + used
    return Figures(
        requests=requests,
        seconds=sum(f.seconds for f in rounds),
        p50_ms=sum(f.p50_ms * f.requests for f in rounds) / requests if requests else 0.0,
        p99_ms=max(f.p99_ms for f in rounds),
        non2xx=sum(f.non2xx for f in rounds),
        socket_errors=sum(f.socket_errors for f in rounds),
        first_non2xx=next((f.first_non2xx for f in rounds if f.non2xx), 0),
        cpu_s=sum(f.cpu_s for f in rounds),
        cpu_parts=parts,
    )


def cpu_split(f: Figures) -> str:
    """The CPU per request of each part, e.g. ``api 3.10, projector 1.20, postgres 2.40``."""
    return ", ".join(f"{part} {cpu * 1000 / max(f.requests, 1):.2f}" for part, cpu in f.cpu_parts.items())


OPS_TOKEN = "bench-operator-token-0123456789"  # ours' /metrics


def ryw_buckets(side: Side) -> dict[float, float]:
    """Ours' ``vto_read_your_writes_wait_seconds`` histogram: cumulative count per bucket bound
    (every API worker's together)."""
    text = httpx.get(
        f"{side.base}/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"}, timeout=30
    ).text
    found: dict[float, float] = {}
    for line in text.splitlines():
        match = re.match(r'^vto_read_your_writes_wait_seconds_bucket\{.*le="([^"]+)".*\} (\S+)$', line)
        if match:
            bound = float("inf") if match.group(1) == "+Inf" else float(match.group(1))
            found[bound] = found.get(bound, 0.0) + float(match.group(2))
    return found


@dataclass
class Waits:
    """Read-your-writes waits during a cell: how many reads, how many waited at all, and the
    bucket bounds (seconds) that hold the median and the 99th percentile."""

    reads: int
    waited: int
    p50_s: float
    p99_s: float

    @classmethod
    def between(cls, before: dict[float, float], after: dict[float, float]) -> Waits | None:
        bounds = sorted(after)
        counts = [after[b] - before.get(b, 0.0) for b in bounds]
        if not counts or counts[-1] <= 0:
            return None
        total = counts[-1]

        def quantile(q: float) -> float:
            return next(b for b, c in zip(bounds, counts, strict=True) if c >= q * total)

        zero = counts[bounds.index(0.0)] if 0.0 in bounds else 0.0
        return cls(int(total), int(total - zero), quantile(0.5), quantile(0.99))

    def line(self) -> str:
        def shown(seconds: float) -> str:
            return "0 (no wait)" if seconds == 0 else f"<= {seconds * 1000:g} ms"

        return (
            f"{self.reads} reads, {self.waited} of them waited; p50 {shown(self.p50_s)}, "
            f"p99 {shown(self.p99_s)} (the histogram's bucket bounds)"
        )


# --- checks ----------------------------------------------------------------------------------


def our_double_charges(url: str) -> int:
    """Jobs the event store shows reserved more than once."""
    from benchmarks.chaos import job_histories

    return sum(1 for job in job_histories(url).values() if len(job.reserved) > 1)


def audit(env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", "from infra.cli import main; main()", "ledger", "audit", "--wait", "120"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def prd_violations(engine: sa.Engine) -> dict[str, int]:
    """Theirs: jobs with more than one usage line (double charges), jobs with none, and users
    whose credit differs from the seeded credits minus their usage lines."""
    with engine.connect() as conn:
        double = conn.exec_driver_sql(
            "SELECT count(*) FROM (SELECT job_id FROM prd.point_usage GROUP BY job_id HAVING count(*) > 1) d"
        ).scalar_one()
        unpaid = conn.exec_driver_sql(
            "SELECT count(*) FROM prd.vto_job j WHERE NOT EXISTS "
            "(SELECT 1 FROM prd.point_usage u WHERE u.job_id = j.id)"
        ).scalar_one()
        balance = conn.exec_driver_sql(
            "SELECT count(*) FROM prd.entitlements e WHERE e.credit <> %(credits)s - coalesce("
            "(SELECT sum(amount) FROM prd.point_usage u WHERE u.user_id = e.user_id "
            "AND u.source = 'credit'), 0)",
            {"credits": CREDITS},
        ).scalar_one()
    return {"double_charges": double, "jobs_without_usage": unpaid, "balance_mismatches": balance}


# --- output ----------------------------------------------------------------------------------


def table(rows: list[tuple[Cell, Figures, Figures]]) -> str:
    """The markdown table; "non-2xx" counts socket errors (connect, read, write, timeout) too,
    and a side that completed no request in the cell shows dashes."""
    head = (
        "| load | ours req/s | p50 ms | p99 ms | non-2xx | CPU ms/req "
        "| PRD req/s | p50 ms | p99 ms | non-2xx | CPU ms/req | ratio req/s |"
    )
    lines = [head, "|" + "---|" * 12]
    for cell, ours, theirs in rows:
        ratio = f"{ours.rps / theirs.rps:.2f}" if ours.requests and theirs.requests else "-"
        sides = [
            f"{f.rps:,.0f} | {f.p50_ms:.1f} | {f.p99_ms:.1f} | {f.non2xx + f.socket_errors} | "
            f"{f.cpu_ms_per_request:.2f}"
            if f.requests
            else f"0 | - | - | {f.non2xx + f.socket_errors} | -"
            for f in (ours, theirs)
        ]
        lines.append(f"| {cell.label} | {sides[0]} | {sides[1]} | {ratio} |")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=20, help="seconds of load per side and cell")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="uvicorn worker processes of each side; the run is made once for each value",
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--gallery", type=int, default=3, help="finished jobs per project (gallery rows)")
    parser.add_argument(
        "--lot-users", type=int, default=200, help="users of the lots comparison (each side of it)"
    )
    parser.add_argument(
        "--cells", nargs="+", choices=[c.name for c in CELLS], help="a subset of the cells, in table order"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (at most one per connection)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of rest before each load")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="loads per side, N and cell, in the order (N=1 ours, N=1 theirs, N=2 ours, ...), then "
        "reversed, ... (--duration split between them): a machine whose speed drifts during a cell "
        "favours neither side nor any N",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    names = set(args.cells or [c.name for c in CELLS])
    args.selected = [c for c in CELLS if c.name in names]
    return args


@dataclass
class Bench:
    """Both sides, started on one embedded PostgreSQL in ``root``."""

    args: argparse.Namespace
    root: Path
    processes: Processes
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    seeded: list[Seeded] = field(default_factory=list)
    lot_users: list[Seeded] = field(default_factory=list)  # each holding LOTS lots
    their_engine: sa.Engine | None = None
    sides: list[Side] = field(default_factory=list)
    postgres: Postgres | None = None
    work: Path = Path()
    rows: list[tuple[Cell, Figures, Figures]] = field(default_factory=list)
    checks: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"ours": [], "prd": []})
    loads: dict[str, list[Figures]] = field(default_factory=dict)  # the current cell's rounds
    waits_before: dict[float, float] | None = None

    def start(self) -> None:
        args, data_dir = self.args, self.root / "data"
        # Both sides' pools on one server: room for them with any --workers.
        self.postgres = Postgres(self.root)
        self.postgres.configure(max_connections=str(100 + 60 * args.workers))
        self.url = url = self.postgres.url
        upgrade(url)
        print(f"seeding {args.users} users on both sides ...", file=sys.stderr, flush=True)
        self.seeded = seed(url, data_dir, args.users, credits=CREDITS)
        finish_gallery_jobs(url, self.seeded, args.gallery)
        if any(cell.lots for cell in args.selected):
            self.lot_users = seed(url, data_dir, args.lot_users, credits=CREDITS, prefix="lots")
            grant_more_lots(url, self.lot_users, LOTS - 1)
        their_url = prd_url(url)
        self.their_engine = prd.make_engine(their_url)
        settings = Settings()
        seed_prd(self.their_engine, self.seeded + self.lot_users, args.gallery)
        self.env = self.processes.env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "VTO_DATABASE_URL": url,
            "VTO_JWT_SECRET": SECRET,
            "VTO_DATA_DIR": str(data_dir),
            "VTO_OPS_TOKEN": OPS_TOKEN,
            "PRD_DATABASE_URL": their_url,
            "PRD_JWT_SECRET": SECRET,
            "PRD_POOL_SIZE": str(settings.db_pool_size),
            "PRD_MAX_OVERFLOW": str(settings.db_max_overflow),
        }
        ours_port, theirs_port = free_port(), free_port()
        projector = self.processes.start("projector")
        api = self.processes.start("api", "--port", str(ours_port), "--workers", str(args.workers))
        uvicorn = self.processes.start_command("prd-flow", prd_command(theirs_port, args.workers))
        wait_projected(url, args.users * args.gallery, args.users * args.gallery)
        wait_http(f"http://127.0.0.1:{ours_port}/healthz", 120)
        wait_http(f"http://127.0.0.1:{theirs_port}/healthz", 120)
        postmaster = embedded_postgres_pid(self.root)
        assert postmaster is not None
        self.sides = [
            Side(
                "ours",
                f"http://127.0.0.1:{ours_port}",
                lambda: {"api": api.pid, "projector": projector.pid, "postgres": postmaster},
            ),
            Side(
                "prd",
                f"http://127.0.0.1:{theirs_port}",
                lambda: {"api": uvicorn.pid, "postgres": postmaster},
            ),
        ]

    def warm_up(self, urls: list[str]) -> None:
        """Each side's worker processes, pools, caches and code paths warmed by a short load."""
        self.work = self.root / "wrk"
        self.work.mkdir()
        warm = argparse.Namespace(**{**vars(self.args), "duration": 2, "settle": 0})
        for side in self.sides:
            measure(side, Cell("warm-up", "post", 8), self.seeded, self.work, warm, urls)

    def begin(self, cell: Cell) -> None:
        """Before a cell's first load: what its requests need, and ours' read-your-writes
        waits so far (a "ryw" cell)."""
        ours, theirs = self.sides
        assert self.their_engine is not None
        if cell.kind == "job" and not ours.job_ids:
            our_engine = sa.create_engine(sqlalchemy_url(self.url))
            ours.job_ids = newest_jobs(our_engine, OUR_NEWEST)
            our_engine.dispose()
            theirs.job_ids = newest_jobs(self.their_engine, PRD_NEWEST)
        self.loads = {side.name: [] for side in self.sides}
        self.waits_before = ryw_buckets(ours) if cell.kind == "ryw" else None

    def load(self, cell: Cell, side: Side, round_: int, urls: list[str]) -> None:
        """One of the cell's rounds on one side (``--duration`` split between the rounds)."""
        each = argparse.Namespace(**{**vars(self.args), "duration": self.args.duration / self.args.rounds})
        f = measure(side, cell, self.population(cell), self.work, each, urls)
        self.loads[side.name].append(f)
        print(
            f"{cell.name:<12} N={self.args.workers} {side.name:<5} round {round_ + 1}: {f.rps:8.0f} req/s  "
            f"p50 {f.p50_ms:6.1f} ms  p99 {f.p99_ms:6.1f} ms",
            file=sys.stderr,
            flush=True,
        )

    def end(self, cell: Cell) -> None:
        """After a cell's last load: its figures, and the checks after a POST cell."""
        ours = self.sides[0]
        figures = {name: combined(rounds) for name, rounds in self.loads.items()}
        if self.waits_before is not None:
            figures["ours"].waits = Waits.between(self.waits_before, ryw_buckets(ours))
        for side in self.sides:
            f = figures[side.name]
            print(
                f"{cell.name:<12} N={self.args.workers} {side.name:<5} {f.rps:8.0f} req/s  "
                f"p50 {f.p50_ms:6.1f} ms  p99 {f.p99_ms:6.1f} ms  non-2xx {f.non2xx} "
                f"(first {f.first_non2xx})  socket errors {f.socket_errors}  "
                f"CPU {f.cpu_ms_per_request:.2f} ms/req ({cpu_split(f)})",
                file=sys.stderr,
                flush=True,
            )
            if cell.kind == "post":
                result = {"cell": cell.name, **self.check(side)}
                self.checks[side.name].append(result)
                print(f"{'':<12} {side.name:<5} checks {result}", file=sys.stderr, flush=True)
        self.rows.append((cell, figures["ours"], figures["prd"]))

    def population(self, cell: Cell) -> list[Seeded]:
        """Who a cell's requests are for: every seeded user, or, in the lots comparison, as
        many users holding one lot (the ordinary ones) as there are holding ``LOTS``."""
        if cell.lots == LOTS:
            return self.lot_users
        if cell.lots == 1:
            return self.seeded[: len(self.lot_users)]
        return self.seeded

    def check(self, side: Side) -> dict[str, Any]:
        if side.name == "prd":
            assert self.their_engine is not None
            return prd_violations(self.their_engine)
        code, output = audit(self.env)
        found: dict[str, Any] = {"double_charges": our_double_charges(self.url), "audit_exit": code}
        if code != 0:
            found["audit"] = output.splitlines()[-20:]
        return found

    def close(self) -> None:
        if self.their_engine is not None:
            self.their_engine.dispose()
        self.processes.stop()
        if self.postgres is not None:
            self.postgres.close()
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if shutil.which("wrk") is None:
        print(NO_WRK, file=sys.stderr)
        return 2
    benches: list[Bench] = []
    try:
        for workers in args.workers:
            root = Path(tempfile.mkdtemp(prefix="vto-jobs-vs-prd-"))
            root.chmod(0o755)
            logs = LOGS / f"workers-{workers}"  # each deployment's own
            logs.mkdir(parents=True, exist_ok=True)
            bench = Bench(argparse.Namespace(**{**vars(args), "workers": workers}), root, Processes({}, logs))
            benches.append(bench)
            print(f"== {workers} worker(s) per side", file=sys.stderr, flush=True)
            bench.start()
        urls = [bench.url for bench in benches]
        for bench in benches:
            bench.warm_up(urls)
        for cell in args.selected:
            interleaved(cell, benches, args.rounds, urls)
    finally:
        for bench in benches:
            bench.close()
    runs = [Run(bench.args.workers, bench.rows, bench.checks) for bench in benches]
    failed = sum(report(args, run) for run in runs)
    if len(runs) > 1:
        print(scale_table(runs))
    if args.json:
        payload = {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "users": args.users,
            "runs": [run_json(run) for run in runs],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 1 if failed else 0


def interleaved(cell: Cell, benches: list[Bench], rounds: int, urls: list[str]) -> None:
    """One cell on every deployment, the loads in turn: round 1 in the order (N=1 ours, N=1
    theirs, N=2 ours, N=2 theirs, ...), round 2 in the reverse order, and so on, so that a
    machine whose speed drifts during the cell favours neither side nor any N."""
    for bench in benches:
        bench.begin(cell)
    slots = [(bench, side) for bench in benches for side in bench.sides]
    for round_ in range(rounds):
        for bench, side in slots if round_ % 2 == 0 else slots[::-1]:
            bench.load(cell, side, round_, urls)
    for bench in benches:
        bench.end(cell)


@dataclass
class Run:
    """The figures of one run: ``workers`` processes per side."""

    workers: int
    rows: list[tuple[Cell, Figures, Figures]]
    checks: dict[str, Any]


def scale_table(runs: list[Run]) -> str:
    """Per cell: the ratio (ours / theirs) at each N, and ours at each N against ours at the
    first N (does a replica add throughput?)."""
    base = runs[0]
    head = "| load | " + " | ".join(f"ratio N={r.workers}" for r in runs)
    head += " | " + " | ".join(f"ours N={r.workers} / N={base.workers}" for r in runs[1:]) + " |"
    lines = [
        "Scale-out: ratio = ours / PRD flow (req/s); ours at N workers against ours at the first N",
        "",
        head,
    ]
    lines.append("|" + "---|" * (1 + len(runs) + len(runs) - 1))
    for index, (cell, *_rest) in enumerate(base.rows):
        ratios, gains = [], []
        for run in runs:
            _, ours, theirs = run.rows[index]
            ratios.append(f"{ours.rps / theirs.rps:.2f}" if ours.requests and theirs.requests else "-")
        for run in runs[1:]:
            ours, first = run.rows[index][1], base.rows[index][1]
            gains.append(f"{ours.rps / first.rps:.2f}" if ours.requests and first.requests else "-")
        lines.append(f"| {cell.label} | " + " | ".join(ratios) + " | " + " | ".join(gains) + " |")
    return "\n".join(lines) + "\n"


def run_json(run: Run) -> dict[str, Any]:
    cells = [
        {
            "cell": c.name,
            "label": c.label,
            "ours": fig(o),
            "prd": fig(t),
            "ratio": o.rps / t.rps if o.requests and t.requests else None,
        }
        for c, o, t in run.rows
    ]
    return {"workers": run.workers, "cells": cells, "checks": run.checks}


def report(args: argparse.Namespace, run: Run) -> int:
    """Print the table and the checks of one run; the number of failed checks."""
    rows, checks = run.rows, run.checks
    print(
        f"\n{args.duration:g} s per side and cell ({args.rounds} rounds), {run.workers} uvicorn worker(s) "
        "per side, ",
        end="",
    )
    print(f"{args.users} users\n")
    print(table(rows))
    print()
    for cell, ours, _ in rows:
        if ours.waits is not None:
            print(f"read-your-writes waits, ours, {cell.label}: {ours.waits.line()}")
    for cell, *sides in rows:
        for name, f in zip(("ours", "prd"), sides, strict=True):
            if not f.requests:
                print(f"warning: {cell.name} ({name}): no request completed within the cell")
            if f.non2xx or f.socket_errors:
                print(
                    f"warning: {cell.name} ({name}): {f.non2xx} non-2xx responses (the first: "
                    f"{f.first_non2xx}), {f.socket_errors} socket errors; see {LOGS}"
                )
    failed = 0
    for name in ("ours", "prd"):
        for c in checks[name]:
            found = {k: v for k, v in c.items() if k != "cell"}
            failed += any(v for k, v in found.items() if k not in ("audit",))
            print(f"checks after {c['cell']} ({name}): {json.dumps(found)}")
    print()
    return failed


def fig(f: Figures) -> dict[str, Any]:
    cpu = f.cpu_ms_per_request if f.requests else None
    return {**asdict(f), "rps": f.rps, "cpu_ms_per_request": cpu}


def prd_command(port: int, workers: int) -> list[str]:
    """uvicorn as ``vto api`` runs it (``command_api.serve``): httptools, uvloop, no access log,
    no server header, 30 s keep-alive, ``workers`` processes."""
    from command_api.serve import GRACEFUL_SHUTDOWN_S, KEEP_ALIVE_S

    return [
        *(sys.executable, "-m", "uvicorn", "benchmarks.prd_flow.app:create_app", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        *("--loop", "uvloop", "--http", "httptools", "--no-access-log", "--no-server-header"),
        *("--timeout-keep-alive", str(KEEP_ALIVE_S)),
        *("--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_S)),
    ]


def free_port() -> int:
    from infra.kafka.local import free_port as pick

    return pick()


if __name__ == "__main__":
    sys.exit(main())
