"""What a generation job needs from the catalog, checked for the caller.

Called by POST /vto/jobs before anything is charged: one query reads the project, the caller's
share role, the products and the assets together (the request path's hottest catalog read)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from command_api.auth import tokens
from command_api.catalog.access import parse_id
from command_api.catalog.errors import NoProducts, ReadOnlyProject, WrongAssetType
from command_api.catalog.models import ShareRole
from command_api.own_reads import SESSION_ENDED, check_token, revoked
from command_api.problems import NotFound
from ledger.store import FROM_SNAPSHOT
from projections.events import EVENTS_TABLE, SNAPSHOTS_TABLE

_IMAGE = "'id', {t}.id, 'storage_key', {t}.storage_key, 'media_type', {t}.media_type, "
_IMAGE += "'width', {t}.width, 'height', {t}.height"

# One round trip: the caller's token state, the project, the caller's share role on it, the
# wanted products of that project and the caller's own wanted assets (JSON aggregates; absent
# rows are simply missing), and the events of the caller's ledger stream after version
# ``:after`` (none when it is null): what the ledger's account store needs to bring the
# account it holds up to date before it decides (``ledger.store.StreamNews``). With ``:after``
# 0 (``FROM_SNAPSHOT``: the store holds nothing of the user), the user's newest snapshot too,
# and the events after it: the whole account, without the store's two reads of its own.
#
# The stream's bounds are written so that the planner can see them, whatever it estimates: a
# null ``:after`` (the store wants no news: the user's appends are in flight, or the user is
# decided under the lock; a busy user's usual case) is a condition on the parameter alone,
# checked once before anything is read, and a known version is a bound of its own. The one
# bound ``greatest(:after, snapshot)`` it replaced hid both: for a seller holding a large share
# of the log, PostgreSQL then chose to read the whole log (20-37 ms a request, for no row at
# all), and that seller's orders on two processes cost the database 5 ms of CPU each
# (``docs/ledger.md``, "The job order's read").
_JOB_INPUTS = text(
    "SELECT u.token_version, u.deleted_at IS NOT NULL AS deleted, p.id AS project_id, p.owner_id, "  # noqa: S608 (fixed fragments; every value is bound)
    f"{SESSION_ENDED} AS session_ended, "
    "(SELECT s.role FROM project_shares s WHERE s.project_id = p.id AND s.user_id = :user) AS role, "
    "(SELECT coalesce(json_agg(json_build_object("
    + _IMAGE.format(t="x")
    + ", 'category', x.category, 'side', x.side)), '[]'::json) "
    "   FROM products x WHERE x.project_id = p.id AND x.id = ANY(:products)) AS products, "
    "(SELECT coalesce(json_agg(json_build_object(" + _IMAGE.format(t="a") + ", 'type', a.type)), '[]'::json) "  # noqa: S608
    "   FROM assets a WHERE a.owner_id = :user AND a.id = ANY(:assets)) AS assets, "
    "n.versions AS news_versions, n.topics AS news_topics, n.states AS news_states, "
    "snap.originator_version AS snapshot_version, snap.topic AS snapshot_topic, snap.state AS snapshot_state "
    "FROM users u LEFT JOIN projects p ON p.id = :project "
    "LEFT JOIN LATERAL (SELECT s.originator_version, s.topic, s.state "
    f"  FROM {SNAPSHOTS_TABLE} s WHERE s.originator_id = :user AND CAST(:after AS bigint) = {FROM_SNAPSHOT} "
    "  ORDER BY s.originator_version DESC LIMIT 1) snap ON true "
    "LEFT JOIN LATERAL (SELECT array_agg(e.originator_version ORDER BY e.originator_version) AS versions, "
    "  array_agg(e.topic ORDER BY e.originator_version) AS topics, "
    "  array_agg(e.state ORDER BY e.originator_version) AS states "
    f"  FROM {EVENTS_TABLE} e WHERE CAST(:after AS bigint) IS NOT NULL AND e.originator_id = :user "
    "  AND e.originator_version > CAST(:after AS bigint) "
    "  AND e.originator_version > coalesce(snap.originator_version, 0)) n ON true "
    "WHERE u.id = :user"
)


def load_job_inputs(
    session: Session | Connection,
    user_id: uuid.UUID,
    project_id: uuid.UUID | str,
    product_ids: Sequence[uuid.UUID | str],
    model_asset_id: uuid.UUID | str,
    background_asset_id: uuid.UUID | str | None = None,
    *,
    claims: tokens.Claims | None = None,
    stream_after: int | None = None,
) -> dict[str, Any]:
    """The storage keys and facts of a job's inputs, JSON-ready (ids as text)::

        {"project_id": "...", "project_owner_id": "...",
         "products": [{"id", "category", "side", "storage_key", "media_type", "width", "height"}, ...],
         "model": {"id", "storage_key", "media_type", "width", "height"},
         "background": {...same...} or None,
         "stream": [(version, topic, state), ...],
         "snapshot": (version, topic, state) or None}

    Products come in the order given (duplicates dropped). Rules: the caller owns the project
    or is one of its editors (a viewer may not order jobs into it: ``ReadOnlyProject``, 403);
    every product belongs to that project; the assets are the caller's own, of the right type
    (how many products a job takes is the request schema's rule). Raises ``NotFound`` (404)
    for a project, product or asset the caller may not use (or a malformed id), ``NoProducts``
    or ``WrongAssetType`` (422). With ``claims``, the caller's access token is checked in the
    same statement (``Unauthorized``). ``stream``: the caller's ledger events after version
    ``stream_after`` (none when it is None); ``snapshot``: with ``stream_after`` 0
    (``FROM_SNAPSHOT``), the caller's newest ledger snapshot (None when there is none), the
    ``stream`` then starting after it. Reads only; never commits."""
    project = parse_id(project_id, "project")
    wanted = list(dict.fromkeys(parse_id(pid, "product") for pid in product_ids))
    model = parse_id(model_asset_id, "asset")
    background = None if background_asset_id is None else parse_id(background_asset_id, "asset")
    row = (
        session.execute(
            _JOB_INPUTS,
            {
                "user": user_id,
                "family": claims.family if claims is not None else None,
                "project": project,
                "products": wanted,
                "assets": [model] if background is None else [model, background],
                "after": stream_after,
            },
        )
        .mappings()
        .first()
    )
    if claims is not None:
        if row is None:
            raise revoked()
        check_token(claims, row["token_version"], row["deleted"], row["session_ended"])
    if row is None or row["project_id"] is None or (row["owner_id"] != user_id and row["role"] is None):
        raise NotFound("project")
    if row["owner_id"] != user_id and row["role"] == ShareRole.VIEWER:
        raise ReadOnlyProject()
    if not wanted:
        raise NoProducts()
    found = {uuid.UUID(p["id"]): p for p in row["products"]}
    missing = [pid for pid in wanted if pid not in found]
    if missing:
        raise NotFound(f"product {missing[0]}")
    assets = {uuid.UUID(a["id"]): a for a in row["assets"]}
    return {
        "project_id": str(project),
        "project_owner_id": str(row["owner_id"]),
        "products": [found[pid] for pid in wanted],
        "model": _asset(assets, model, "model"),
        "background": None if background is None else _asset(assets, background, "background"),
        "stream": list(
            zip(row["news_versions"] or (), row["news_topics"] or (), row["news_states"] or (), strict=True)
        ),
        "snapshot": None
        if row["snapshot_version"] is None
        else (row["snapshot_version"], row["snapshot_topic"], row["snapshot_state"]),
    }


def _asset(assets: dict[uuid.UUID, dict[str, Any]], asset_id: uuid.UUID, type_: str) -> dict[str, Any]:
    asset = assets.get(asset_id)
    if asset is None:
        raise NotFound("asset")
    if asset["type"] != type_:
        raise WrongAssetType(f"asset {asset_id} is a {asset['type']}, not a {type_}")
    return {k: v for k, v in asset.items() if k != "type"}
