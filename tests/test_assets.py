"""/assets: uploads of model photos and backgrounds, read back by their owner only; and
load_job_inputs, the catalog check the /vto routes make before a job is charged."""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import pytest
from PIL import ExifTags, Image, ImageCms, ImageDraw
from PIL.PngImagePlugin import PngInfo
from sqlalchemy import text

from command_api.catalog.images import check_image
from command_api.catalog.job_inputs import _JOB_INPUTS, load_job_inputs
from command_api.catalog.uploads import TooManyUploads, UploadLimits, UploadsBusy
from command_api.problems import ProblemError
from ledger.store import FROM_SNAPSHOT
from projections.events import EVENTS_TABLE
from tests.api_factories import make_user
from tests.catalog_factories import (
    API,
    assert_problem,
    create_project,
    image_bytes,
    share,
    snapshot,
    upload_asset,
    upload_product,
)


def test_upload_read_and_list_assets(client: Any, services: Any) -> None:
    owner, other = make_user(services), make_user(services)
    response = client.post(
        f"{API}/assets",
        data={"type": "model", "name": "Studio A"},
        files={"file": ("m.jpg", image_bytes("JPEG", (96, 128)), "image/jpeg")},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    model = response.json()
    assert {k: model[k] for k in ("type", "name", "media_type", "width", "height")} == {
        "type": "model",
        "name": "Studio A",
        "media_type": "image/jpeg",
        "width": 96,
        "height": 128,
    }
    background = upload_asset(client, owner, "background")
    upload_asset(client, other, "model")

    read = client.get(f"{API}/assets/{model['id']}", headers=owner.headers)
    assert read.status_code == 200 and read.json()["id"] == model["id"]
    stored = Image.open(io.BytesIO(client.get(read.json()["url"]).content))
    assert (stored.format, stored.size) == ("JPEG", (96, 128))
    assert_problem(client.get(f"{API}/assets/{model['id']}", headers=other.headers), 404, "not_found")
    assert_problem(client.get(f"{API}/assets/{uuid4()}", headers=owner.headers), 404, "not_found")

    mine = client.get(f"{API}/assets", headers=owner.headers).json()
    assert [a["id"] for a in mine["items"]] == [background["id"], model["id"]]
    only_models = client.get(f"{API}/assets", params={"type": "model"}, headers=owner.headers).json()
    assert [a["id"] for a in only_models["items"]] == [model["id"]]
    page = client.get(f"{API}/assets", params={"limit": 1}, headers=owner.headers).json()
    assert len(page["items"]) == 1 and page["next_cursor"]


def test_asset_bad_input_changes_nothing(client: Any, services: Any) -> None:
    owner = make_user(services)
    upload_asset(client, owner)
    before = snapshot(services)
    png = image_bytes()
    cases: list[tuple[dict[str, Any], dict[str, Any] | None, int]] = [
        ({"type": "person"}, {"file": ("a.png", png)}, 422),
        ({}, {"file": ("a.png", png)}, 422),
        ({"type": "model"}, None, 422),
        ({"type": "model"}, {"file": ("a.txt", b"plain text", "text/plain")}, 415),
        ({"type": "model"}, {"file": ("a.gif", image_bytes("GIF"), "image/gif")}, 415),
        ({"type": "model"}, {"file": ("a.png", png[:-30])}, 422),
        ({"type": "model"}, {"file": ("a.png", image_bytes(size=(8192 + 1, 64)))}, 422),
        ({"type": "model", "name": "n" * 201}, {"file": ("a.png", png)}, 422),
    ]
    for data, files, status in cases:
        assert_problem(client.post(f"{API}/assets", data=data, files=files, headers=owner.headers), status)
    assert_problem(client.post(f"{API}/assets", json={"type": "model"}, headers=owner.headers), 422)
    assert_problem(client.get(f"{API}/assets/42", headers=owner.headers), 422)
    assert_problem(client.get(f"{API}/assets?type=person", headers=owner.headers), 422)
    assert_problem(client.get(f"{API}/assets?cursor=%00", headers=owner.headers), 422)  # a control character
    assert snapshot(services) == before


def test_load_job_inputs_checks_access_and_returns_keys(client: Any, services: Any) -> None:
    owner, reader, stranger = make_user(services), make_user(services), make_user(services)
    viewer = make_user(services)
    project = create_project(client, owner)
    other_project = create_project(client, owner, project["collection_id"], "other")
    top = upload_product(client, owner, project["id"], "top", "front")
    back = upload_product(client, owner, project["id"], "top", "back")
    foreign = upload_product(client, owner, other_project["id"])
    share(client, owner, project["id"], reader, role="editor")  # editors order jobs in it
    share(client, owner, project["id"], viewer)  # viewers do not
    assets = {
        (who, kind): upload_asset(client, caller, kind)
        for who, caller in (("owner", owner), ("reader", reader))
        for kind in ("model", "background")
    }

    with services.sessions() as session:
        got = load_job_inputs(
            session,
            reader.id,
            project["id"],
            [back["id"], top["id"], back["id"]],
            assets["reader", "model"]["id"],
            assets["reader", "background"]["id"],
        )
        assert got["project_id"] == project["id"] and got["project_owner_id"] == str(owner.id)
        assert [(p["id"], p["category"], p["side"]) for p in got["products"]] == [
            (back["id"], "top", "back"),
            (top["id"], "top", "front"),
        ]
        assert got["products"][0]["storage_key"] == f"products/{back['id']}.png"
        assert got["model"]["storage_key"] == f"assets/{assets['reader', 'model']['id']}.png"
        assert got["background"]["id"] == assets["reader", "background"]["id"]
        assert set(got["model"]) == {"id", "storage_key", "media_type", "width", "height"}
        assert services.storage.exists(got["products"][0]["storage_key"])

        no_background = load_job_inputs(
            session, owner.id, project["id"], [top["id"]], assets["owner", "model"]["id"]
        )
        assert no_background["background"] is None

        refused: list[tuple[tuple[Any, ...], int, str]] = [
            ((stranger.id, project["id"], [top["id"]], assets["owner", "model"]["id"]), 404, "not_found"),
            ((viewer.id, project["id"], [top["id"]], assets["owner", "model"]["id"]), 403, "forbidden"),
            ((owner.id, str(uuid4()), [top["id"]], assets["owner", "model"]["id"]), 404, "not_found"),
            ((owner.id, "not-a-uuid", [top["id"]], assets["owner", "model"]["id"]), 404, "not_found"),
            ((owner.id, project["id"], [foreign["id"]], assets["owner", "model"]["id"]), 404, "not_found"),
            ((owner.id, project["id"], ["junk"], assets["owner", "model"]["id"]), 404, "not_found"),
            ((owner.id, project["id"], [], assets["owner", "model"]["id"]), 422, "no_products"),
            ((owner.id, project["id"], [top["id"]], assets["reader", "model"]["id"]), 404, "not_found"),
            (
                (owner.id, project["id"], [top["id"]], assets["owner", "background"]["id"]),
                422,
                "wrong_asset_type",
            ),
            (
                (
                    owner.id,
                    project["id"],
                    [top["id"]],
                    assets["owner", "model"]["id"],
                    assets["owner", "model"]["id"],
                ),
                422,
                "wrong_asset_type",
            ),
            (
                (
                    owner.id,
                    project["id"],
                    [top["id"]],
                    assets["owner", "model"]["id"],
                    assets["reader", "background"]["id"],
                ),
                404,
                "not_found",
            ),
        ]
        for args, status, code in refused:
            with pytest.raises(ProblemError) as caught:
                load_job_inputs(session, *args)
            assert (caught.value.status, caught.value.code) == (status, code), args


def photo_with_metadata(fmt: str) -> bytes:
    """A 96x160 photo, red in its top-left corner, stored sideways (EXIF orientation 6: turn it
    a quarter clockwise to view it), with GPS position, camera, description, XMP, a comment,
    an ICC profile and bytes appended after the image."""
    image = Image.new("RGB", (96, 160), "white")
    ImageDraw.Draw(image).rectangle((0, 0, 31, 31), fill="red")
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = "SecretCam", "X100"
    exif[ExifTags.Base.ImageDescription] = "at home, Seoul"
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(
        {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (37.0, 33.0, 59.0)}
    )
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description>SecretXMP</rdf:Description></x:xmpmeta>'
    out = io.BytesIO()
    extra: dict[str, Any] = {"comment": b"SecretComment"} if fmt == "JPEG" else {}
    if fmt == "PNG":  # PNG keeps XMP and comments in text chunks
        extra["pnginfo"] = PngInfo()
        extra["pnginfo"].add_itxt("XML:com.adobe.xmp", xmp.decode())
        extra["pnginfo"].add_text("Comment", "SecretComment")
    image.save(out, format=fmt, exif=exif, icc_profile=icc, xmp=xmp, **extra)
    return out.getvalue() + b"<html>SecretTrailer</html>"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_uploads_are_stored_without_metadata_and_upright(client: Any, services: Any, fmt: str) -> None:
    owner = make_user(services)
    upload = photo_with_metadata(fmt)
    assert b"SecretCam" in upload and b"SecretXMP" in upload
    response = client.post(
        f"{API}/assets", data={"type": "model"}, files={"file": ("m", upload)}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    asset = response.json()
    assert (asset["width"], asset["height"]) == (160, 96)  # turned upright
    data = client.get(asset["url"]).content
    assert asset["size_bytes"] == len(data)
    for secret in (
        b"Exif",
        b"SecretCam",
        b"Seoul",
        b"SecretXMP",
        b"SecretComment",
        b"SecretTrailer",
        b"sRGB",
    ):
        assert secret not in data, secret
    stored = Image.open(io.BytesIO(data))
    assert stored.format == fmt and stored.size == (160, 96)
    assert not stored.getexif() and not {"exif", "xmp", "icc_profile", "comment"} & set(stored.info)
    rgb = stored.convert("RGB")
    red, white = rgb.getpixel((160 - 8, 8)), rgb.getpixel((8, 8))  # top-left went top-right
    assert isinstance(red, tuple) and red[0] > 200 and red[1] < 60, red
    assert white == (255, 255, 255) or (isinstance(white, tuple) and min(white) > 230), white


@pytest.mark.filterwarnings("ignore:.*(EXIF|Tag data|Truncated|Metadata Warning).*:UserWarning")
def test_a_corrupt_exif_block_is_a_problem_or_ignored_never_a_500() -> None:
    photo = photo_with_metadata("JPEG")
    start = photo.index(b"Exif")
    rng = random.Random(11)
    for _ in range(300):
        data = bytearray(photo)
        for _ in range(rng.randint(1, 8)):
            data[rng.randint(start, start + 200)] = rng.randint(0, 255)
        outcome: Any
        try:
            outcome = check_image(bytes(data)).data
        except ProblemError as exc:
            outcome = exc.status
        assert outcome in (415, 422) or b"Exif" not in outcome


# --- attack 3: many large uploads at once ------------------------------------------------------
ATTACK_SIZE = (8192, 4882)  # 40.0 megapixels, under the pixel limit


def large_png() -> bytes:
    """A small file (about 130 KB) that decodes to 8192 x 4882 RGB pixels (120 MB)."""
    image = Image.new("RGB", ATTACK_SIZE, "white")
    draw = ImageDraw.Draw(image)
    for x in range(0, ATTACK_SIZE[0], 512):
        draw.rectangle((x, 0, x + 200, ATTACK_SIZE[1]), fill=(x % 255, 40, 90))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=9)
    return out.getvalue()


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def test_sixteen_concurrent_large_uploads_are_bounded_and_others_are_answered(
    client: Any, services: Any
) -> None:
    """Sixteen concurrent uploads of one 40-megapixel PNG by one account: at most
    ``upload_max_concurrent_per_account`` are taken (the others: 429 with Retry-After), they
    decode at most ``upload_workers`` at a time (the process's peak memory stays under the
    bound the settings give), and an unrelated ``GET /users/me`` is answered meanwhile."""
    settings = services.settings
    attacker, bystander = make_user(services), make_user(services)
    data = large_png()
    before = snapshot(services)
    rss_before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # peak RSS (VmHWM) starts again from the current RSS
    uploading = threading.Event()
    me: list[tuple[int, float]] = []

    def upload() -> Any:
        uploading.set()
        return client.post(
            f"{API}/assets",
            data={"type": "model"},
            files={"file": ("big.png", data, "image/png")},
            headers=attacker.headers,
        )

    def watch(done: threading.Event) -> None:
        uploading.wait(10)
        while not done.is_set():
            start = time.perf_counter()
            status = client.get(f"{API}/users/me", headers=bystander.headers).status_code
            me.append((status, time.perf_counter() - start))
            done.wait(0.2)

    done = threading.Event()
    with ThreadPoolExecutor(17) as pool:
        watcher = pool.submit(watch, done)
        responses = list(pool.map(lambda _: upload(), range(16)))
        done.set()
        watcher.result()
    peak_kb = _status_kb("VmHWM")

    created = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert 1 <= len(created) <= settings.upload_max_concurrent_per_account, [r.status_code for r in responses]
    for response in refused:
        assert_problem(response, 429, "too_many_uploads")
        assert int(response.headers["Retry-After"]) >= 1
    # Decoding 8192 x 4882 RGB holds about two copies of the pixels (docs/security-uploads-and-headers.md).
    per_upload_mb = 2 * 3 * ATTACK_SIZE[0] * ATTACK_SIZE[1] / 2**20 + 20
    bound_mb = settings.upload_workers * per_upload_mb + 150  # + the test process's own churn
    assert (peak_kb - rss_before) / 1024 < bound_mb, (rss_before // 1024, peak_kb // 1024, bound_mb)
    assert me and all(status == 200 for status, _ in me), me
    assert max(seconds for _, seconds in me) < 3, me
    after = snapshot(services)
    assert len(after["assets"]) == len(before["assets"]) + len(created)


def test_the_decoding_pool_runs_at_most_its_workers_and_a_turn_that_never_comes_is_503() -> None:
    limits = UploadLimits(workers=2, per_account=3, queue_timeout_s=0.3)
    lock, release = threading.Lock(), threading.Event()
    counts = {"running": 0, "most": 0}

    def work() -> str:
        with lock:
            counts["running"] += 1
            counts["most"] = max(counts["most"], counts["running"])
        assert release.wait(10)
        with lock:
            counts["running"] -= 1
        return "done"

    async def scenario() -> None:
        held = [asyncio.create_task(limits.run(work)) for _ in range(2)]
        deadline = time.monotonic() + 10
        while counts["running"] < 2:
            assert time.monotonic() < deadline, "the two workers never started"
            await asyncio.sleep(0.01)
        with pytest.raises(UploadsBusy) as busy:
            await limits.run(work)  # no turn within the queue timeout
        assert busy.value.status == 503 and busy.value.headers["Retry-After"]
        release.set()
        assert await asyncio.gather(*held) == ["done", "done"]
        assert await limits.run(lambda: "next") == "next"

    asyncio.run(scenario())
    assert counts["most"] == 2

    owner = uuid4()
    with limits.account_slot(owner), limits.account_slot(owner), limits.account_slot(owner):
        with pytest.raises(TooManyUploads) as refused, limits.account_slot(owner):
            pass
        assert refused.value.status == 429 and refused.value.headers["Retry-After"]
        with limits.account_slot(uuid4()):  # another account has slots of its own
            assert limits.in_progress(owner) == 3
    assert limits.in_progress(owner) == 0


def _reads(plan: dict[str, Any], table: str) -> int:
    """How many times the plan's nodes on ``table`` ran (EXPLAIN ANALYZE, JSON)."""
    own = plan.get("Actual Loops", 0) if plan.get("Relation Name") == table else 0
    return int(own) + sum(_reads(child, table) for child in plan.get("Plans", []))


def test_load_job_inputs_reads_the_callers_stream_only_as_asked(client: Any, services: Any) -> None:
    """No news (the store wants none: a busy user's appends in flight): the stream is not read
    at all, not even scanned for nothing; after a version: the events after it; from the
    snapshot (the store holds nothing of the user): the whole stream when there is no snapshot."""
    owner = make_user(services)
    project = create_project(client, owner)
    top = upload_product(client, owner, project["id"])
    model = upload_asset(client, owner, "model")
    for _ in range(3):
        services.ledger.grant_credits(owner.id, 1, "three events of the owner's stream")
    versions = [e.originator_version for e in services.ledger.recorder.select_events(owner.id)]
    assert len(versions) >= 4
    args = (owner.id, project["id"], [top["id"]], model["id"])
    with services.sessions() as session:
        none = load_job_inputs(session, *args, stream_after=None)
        assert none["stream"] == [] and none["snapshot"] is None
        after = load_job_inputs(session, *args, stream_after=versions[1])
        assert [v for v, _, _ in after["stream"]] == versions[2:]
        whole = load_job_inputs(session, *args, stream_after=FROM_SNAPSHOT)
        assert [v for v, _, _ in whole["stream"]] == versions and whole["snapshot"] is None
        explain = text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(_JOB_INPUTS))
        params = {
            "user": owner.id,
            "family": None,
            "project": uuid.UUID(project["id"]),
            "products": [uuid.UUID(top["id"])],
            "assets": [uuid.UUID(model["id"])],
        }
        for stream_after, reads in ((None, 0), (versions[1], 1)):
            plan = session.execute(explain, {**params, "after": stream_after}).scalar_one()[0]["Plan"]
            assert _reads(plan, EVENTS_TABLE) == reads, (stream_after, plan)


def _job_inputs_plans(session: Any) -> tuple[int, int]:
    """(generic, custom) plans the session's prepared job order read has run with."""
    row = session.execute(
        text(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%news_versions%' AND statement NOT LIKE '%pg_prepared_statements%'"
        )
    ).one()
    return int(row.generic_plans), int(row.custom_plans)


def test_the_job_order_read_runs_on_a_generic_plan(client: Any, services: Any, pg_url: str) -> None:
    """The API's catalog connections run with ``plan_cache_mode`` from the settings
    (``force_generic_plan``): once psycopg has prepared the job order's read (its fifth call
    on a connection), every call runs the plan made once, none is planned afresh; an engine
    given ``auto`` keeps the server's own choice."""
    from infra.orm import make_engine

    owner = make_user(services)
    project = create_project(client, owner)
    top = upload_product(client, owner, project["id"])
    model = upload_asset(client, owner, "model")
    services.ledger.grant_credits(owner.id, 1, "an event of the owner's stream")
    version = services.ledger.account(owner.id).version
    args = (owner.id, project["id"], [top["id"]], model["id"])
    assert services.settings.db_plan_cache_mode == "force_generic_plan"
    with services.sessions() as session:
        assert session.execute(text("SHOW plan_cache_mode")).scalar_one() == "force_generic_plan"
        for _ in range(12):
            got = load_job_inputs(session, *args, stream_after=version)
            assert got["stream"] == [] and got["project_id"] == project["id"]
        generic, custom = _job_inputs_plans(session)
        assert generic >= 7 and custom == 0, (generic, custom)
    auto = make_engine(pg_url, 1, plan_cache_mode="auto")
    try:
        with auto.connect() as conn:
            assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == "auto"
    finally:
        auto.dispose()
