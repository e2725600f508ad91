"""The PRD's job-creation flow as a user would build it instead of this project: the baseline
that ``benchmarks/jobs_vs_prd.py`` loads alternately with ``vto api``.

    PRD_DATABASE_URL=postgresql+psycopg://... PRD_JWT_SECRET=... \\
        uvicorn benchmarks.prd_flow.app:create_app --factory --workers N --loop uvloop --http httptools

FastAPI with sync endpoints (run on AnyIO's thread pool, like ``vto api``'s) and SQLAlchemy
Core on psycopg 3, its own tables in the PostgreSQL schema ``prd`` (the benchmark puts them in
a database of their own on the same server as ours), with ``vto api``'s connection budget
(``PRD_POOL_SIZE`` + ``PRD_MAX_OVERFLOW``, the benchmark passes ``db_pool_size`` and
``db_max_overflow``; 5 s pool timeout). What a request does:

- auth: the bearer JWT is decoded (HS256, the same secret as ``vto api``, ``exp`` checked, an
  ``access`` token required) and its ``sub`` trusted as the user's id: no user row is read
  (``vto api`` reads the user to check the account is active and the token version current);
- ``POST /api/v1/vto/jobs``: in one transaction: the project's ownership (``SELECT`` the project
  ``WHERE id AND owner_id``; 404), ``SELECT ... FOR UPDATE`` of the user's one entitlement row,
  the deduction (active subscription within its daily quota → LookBook ticket for an image /
  Video ticket for a video → credits ≥ cost → 402), ``UPDATE`` of that row, ``INSERT`` of the
  ``vto_job`` and of its ``point_usage`` line, ``COMMIT``; answers 202 with the job. Product
  and model photo ids are stored as given (``vto api`` checks the caller may use each);
- ``GET /api/v1/points``: the entitlement row; ``GET /api/v1/vto/jobs/{id}``: the job row (the
  caller's); ``GET /api/v1/vto/projects/{id}/results``: the ownership check, then the project's
  newest 50 result rows (storage keys; ``vto api`` answers signed URLs).

No queue, no worker, no refunds, no idempotency keys, no read models: what the PRD's pseudo
flow (section 5) says and no more.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import jwt
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    Uuid,
    create_engine,
    insert,
    select,
    update,
)

SCHEMA = "prd"
metadata = MetaData(schema=SCHEMA)

projects = Table(
    "projects",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("owner_id", Uuid, nullable=False, index=True),
    Column("name", Text, nullable=False),
)

# One row per user: the "single row" the PRD's entitlement check locks.
entitlements = Table(
    "entitlements",
    metadata,
    Column("user_id", Uuid, primary_key=True),
    Column("subscription_plan", Text),
    Column("subscription_end", DateTime(timezone=True)),
    Column("daily_quota", Integer),
    Column("used_today", Integer, nullable=False, default=0),
    Column("used_on", Date),
    Column("lookbook_tickets", Integer, nullable=False, default=0),
    Column("video_tickets", Integer, nullable=False, default=0),
    Column("credit", BigInteger, nullable=False, default=0),
)

vto_job = Table(
    "vto_job",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, nullable=False),
    Column("project_id", Uuid, ForeignKey(projects.c.id), nullable=False),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("request", JSON, nullable=False),
    Column("charge_source", Text, nullable=False),
    Column("charge_amount", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("vto_job_user", "user_id", "created_at"),
)

point_usage = Table(
    "point_usage",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", Uuid, nullable=False, index=True),
    Column("job_id", Uuid, ForeignKey(vto_job.c.id)),
    Column("type", Text, nullable=False),  # deduction | restoration
    Column("source", Text, nullable=False),
    Column("amount", Integer, nullable=False),
    Column("balance_after", BigInteger),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The gallery: generated outputs by project (filled by a worker this baseline does not run).
vto_result = Table(
    "vto_result",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", Uuid, ForeignKey(vto_job.c.id), nullable=False),
    Column("project_id", Uuid, nullable=False),
    Column("storage_key", Text, nullable=False),
    Column("media_type", Text, nullable=False),
    Column("width", Integer),
    Column("height", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("vto_result_gallery", "project_id", "created_at"),
)

# The same defaults as this project's settings: which ticket pays for which kind (in priority
# order) and what each kind costs in credits.
TICKETS = {"lookbook": ("lookbook_tickets", "image"), "video": ("video_tickets", "video")}
COSTS = {"image": 1, "video": 5}


class InsufficientEntitlement(Exception):
    pass


@dataclass(frozen=True)
class Deduction:
    source: str  # subscription | ticket:lookbook | ticket:video | credit
    amount: int
    balance_after: int | None
    changes: dict[str, Any] = field(default_factory=dict)  # the UPDATE of the entitlement row


def deduct(row: Mapping[Any, Any], kind: str, now: datetime) -> Deduction:
    """The PRD's priority: subscription (within its daily quota) → ticket of the job's kind →
    credits; raises ``InsufficientEntitlement`` when nothing pays."""
    today = now.astimezone(UTC).date()
    used = row["used_today"] if row["used_on"] == today else 0
    end, quota = row["subscription_end"], row["daily_quota"]
    if row["subscription_plan"] and end is not None and end > now and (quota is None or used < quota):
        left = None if quota is None else quota - used - 1
        return Deduction("subscription", 0, left, {"used_today": used + 1, "used_on": today})
    for ticket, (column, pays_for) in TICKETS.items():
        if pays_for == kind and row[column] > 0:
            return Deduction(f"ticket:{ticket}", 1, row[column] - 1, {column: row[column] - 1})
    cost = COSTS[kind]
    if row["credit"] >= cost:
        return Deduction("credit", cost, row["credit"] - cost, {"credit": row["credit"] - cost})
    raise InsufficientEntitlement(kind)


class JobIn(BaseModel):
    project_id: uuid.UUID
    kind: Literal["image", "video"]
    product_ids: list[uuid.UUID] = Field(min_length=1, max_length=4)
    model_asset_id: uuid.UUID
    background_asset_id: uuid.UUID | None = None
    pose: str = "auto"
    options: dict[str, Any] = Field(default_factory=dict)


def owns_project(conn: Connection, user_id: uuid.UUID, project_id: uuid.UUID) -> bool:
    query = select(projects.c.id).where(projects.c.id == project_id, projects.c.owner_id == user_id)
    return conn.execute(query).first() is not None


def create_job(conn: Connection, user_id: uuid.UUID, body: JobIn, now: datetime) -> dict[str, Any]:
    """The PRD's deduction transaction on ``conn`` (the caller commits): raises LookupError
    (project not the caller's) or InsufficientEntitlement (then nothing is written)."""
    if not owns_project(conn, user_id, body.project_id):
        raise LookupError(body.project_id)
    locked = select(entitlements).where(entitlements.c.user_id == user_id).with_for_update()
    row = conn.execute(locked).mappings().first()
    if row is None:
        raise InsufficientEntitlement(body.kind)
    charge = deduct(row, body.kind, now)
    conn.execute(update(entitlements).where(entitlements.c.user_id == user_id).values(**charge.changes))
    job = {
        "id": uuid.uuid4(),
        "user_id": user_id,
        "project_id": body.project_id,
        "kind": body.kind,
        "status": "queued",
        "request": body.model_dump(mode="json"),
        "charge_source": charge.source,
        "charge_amount": charge.amount,
        "created_at": now,
    }
    conn.execute(insert(vto_job).values(job))
    conn.execute(
        insert(point_usage).values(
            user_id=user_id,
            job_id=job["id"],
            type="deduction",
            source=charge.source,
            amount=charge.amount,
            balance_after=charge.balance_after,
            reason=f"{body.kind} job",
            created_at=now,
        )
    )
    return job


def job_out(job: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": str(job["id"]),
        "status": job["status"],
        "kind": job["kind"],
        "project_id": str(job["project_id"]),
        "charge": {"source": job["charge_source"], "amount": job["charge_amount"]},
        "created_at": job["created_at"].isoformat(),
    }


def points_out(row: Mapping[Any, Any] | None, now: datetime) -> dict[str, Any]:
    if row is None:
        return {"credit": 0, "tickets": dict.fromkeys(TICKETS, 0), "subscription": None}
    subscription = None
    end = row["subscription_end"]
    if row["subscription_plan"] and end is not None and end > now:
        used = row["used_today"] if row["used_on"] == now.astimezone(UTC).date() else 0
        subscription = {
            "plan": row["subscription_plan"],
            "period_end": end.isoformat(),
            "daily_quota": row["daily_quota"],
            "used_today": used,
        }
    return {
        "credit": row["credit"],
        "tickets": {ticket: row[column] for ticket, (column, _) in TICKETS.items()},
        "subscription": subscription,
    }


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 5) -> Engine:
    """The connection budget of ``vto api``'s catalog engine (its settings ``db_pool_size``,
    ``db_max_overflow``, given by the benchmark as ``PRD_POOL_SIZE``, ``PRD_MAX_OVERFLOW``)."""
    return create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=5)


def create_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    metadata.create_all(engine)


def current_user(request: Request, authorization: Annotated[str, Header()] = "") -> uuid.UUID:
    """The bearer JWT's ``sub``, trusted once the token's signature, expiry and type check."""
    scheme, _, token = authorization.partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise jwt.InvalidTokenError("not a bearer token")
        claims = jwt.decode(
            token, request.app.state.secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
        if claims.get("typ") != "access":
            raise jwt.InvalidTokenError("not an access token")
        return uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError) as exc:
        raise HTTPException(401, "invalid token") from exc


@contextmanager
def connection(request: Request) -> Iterator[Connection]:
    """A pooled connection, taken and given back on the endpoint's own thread. (A sync
    generator dependency would give it back on another thread-pool thread after the response:
    with fewer connections than request threads, requests waiting for a connection hold every
    thread and nothing gives one back until the pool timeout.)"""
    with request.app.state.engine.connect() as conn:
        yield conn


User = Annotated[uuid.UUID, Depends(current_user)]
router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/api/v1/vto/jobs", status_code=202)
def post_job(body: JobIn, user: User, request: Request) -> dict[str, Any]:
    try:
        with request.app.state.engine.begin() as conn:
            job = create_job(conn, user, body, datetime.now(UTC))
    except LookupError as exc:
        raise HTTPException(404, "project not found") from exc
    except InsufficientEntitlement as exc:
        raise HTTPException(402, "insufficient_entitlement") from exc
    return job_out(job)


@router.get("/api/v1/points")
def get_points(user: User, request: Request) -> dict[str, Any]:
    with connection(request) as conn:
        row = conn.execute(select(entitlements).where(entitlements.c.user_id == user)).mappings().first()
    return points_out(row, datetime.now(UTC))


@router.get("/api/v1/vto/jobs/{job_id}")
def get_job(job_id: uuid.UUID, user: User, request: Request) -> dict[str, Any]:
    query = select(vto_job).where(vto_job.c.id == job_id, vto_job.c.user_id == user)
    with connection(request) as conn:
        job = conn.execute(query).mappings().first()
    if job is None:
        raise HTTPException(404, "job not found")
    return job_out(job)


@router.get("/api/v1/vto/projects/{project_id}/results")
def gallery(project_id: uuid.UUID, user: User, request: Request) -> dict[str, Any]:
    query = (
        select(vto_result)
        .where(vto_result.c.project_id == project_id)
        .order_by(vto_result.c.created_at.desc(), vto_result.c.id.desc())
        .limit(50)
    )
    with connection(request) as conn:
        if not owns_project(conn, user, project_id):
            raise HTTPException(404, "project not found")
        rows = conn.execute(query).mappings().all()
    items = [
        {
            "job_id": str(r["job_id"]),
            "storage_key": r["storage_key"],
            "media_type": r["media_type"],
            "width": r["width"],
            "height": r["height"],
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]
    return {"items": items, "next_cursor": None}


def create_app(url: str | None = None, secret: str | None = None) -> FastAPI:
    """The app of one uvicorn worker (``--factory``): settings from ``PRD_DATABASE_URL`` and
    ``PRD_JWT_SECRET`` unless given."""
    app = FastAPI(title="PRD flow (baseline)")
    pool = int(os.environ.get("PRD_POOL_SIZE", "10")), int(os.environ.get("PRD_MAX_OVERFLOW", "5"))
    app.state.engine = make_engine(url or os.environ["PRD_DATABASE_URL"], *pool)
    app.state.secret = secret or os.environ["PRD_JWT_SECRET"]
    app.include_router(router)
    return app
