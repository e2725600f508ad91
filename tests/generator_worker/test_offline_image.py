"""The offline backend on a real photo: what a user would look at in the output."""

from __future__ import annotations

import numpy as np
import pytest

from generator_worker.generation import (
    GarmentCategory,
    GarmentImage,
    GarmentNotFoundError,
    GarmentSide,
    ImageFormat,
    InvalidInputError,
    NoPersonFoundError,
    PoseHint,
    UnsupportedRequestError,
)
from generator_worker.generation.offline import OfflineGenerator
from tests.generator_worker.conftest import (
    BLUE_BG,
    RED,
    decode,
    draw_dress,
    draw_trousers,
    draw_tshirt,
    encode_png,
    image_request,
    near,
    skimage_data,
    top,
    uniform,
)

# regions of the 512x512 astronaut photo (output at the same size: no crop)
CHEST = (slice(300, 480), slice(150, 270))
FACE = (slice(80, 190), slice(180, 265))
BACKDROP = (slice(0, 150), slice(0, 70))  # the studio backdrop left of the head


def test_garment_colour_covers_the_torso(
    generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes, astronaut: np.ndarray
) -> None:
    result = generator.generate(image_request(astronaut_png, (top(tshirt_png),)))
    out = decode(result.outputs[0].data)
    assert out.shape == (512, 512, 3)
    covered = near(out[CHEST], RED, 70).mean()
    before = near(astronaut[CHEST], RED, 70).mean()
    assert covered > 0.8, covered
    assert before < 0.3


def test_face_and_background_kept_without_a_new_background(
    generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes, astronaut: np.ndarray
) -> None:
    result = generator.generate(image_request(astronaut_png, (top(tshirt_png),)))
    out = decode(result.outputs[0].data).astype(np.float32)
    face_diff = np.abs(out[FACE] - astronaut[FACE].astype(np.float32)).mean()
    backdrop_diff = np.abs(out[BACKDROP] - astronaut[BACKDROP].astype(np.float32)).mean()
    assert face_diff < 4.0, face_diff
    assert backdrop_diff < 2.0, backdrop_diff


def test_new_background_replaces_the_old_one_and_keeps_the_face(
    generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes, astronaut: np.ndarray
) -> None:
    background = encode_png(uniform(BLUE_BG))
    result = generator.generate(image_request(astronaut_png, (top(tshirt_png),), background))
    out = decode(result.outputs[0].data)
    assert near(out[BACKDROP], BLUE_BG, 30).mean() > 0.9
    assert near(astronaut[BACKDROP], BLUE_BG, 30).mean() < 0.05
    face_diff = np.abs(out[FACE].astype(np.float32) - astronaut[FACE].astype(np.float32)).mean()
    assert face_diff < 12.0, face_diff
    assert near(out[CHEST], RED, 70).mean() > 0.8


def test_full_size_768x1024_jpeg(
    generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    request = image_request(
        astronaut_png,
        (top(tshirt_png),),
        encode_png(uniform(BLUE_BG)),
        width=768,
        height=1024,
        image_format=ImageFormat.JPEG,
    )
    result = generator.generate(request)
    output = result.outputs[0]
    assert output.media_type == "image/jpeg"
    assert (output.width, output.height) == (768, 1024)
    out = decode(output.data)
    assert out.shape == (1024, 768, 3)
    # the garment sits below the face, in the middle columns
    middle = out[650:900, 250:520]
    assert near(middle, RED, 80).mean() > 0.6
    assert set(result.timings_ms) >= {"pose", "segment", "garment", "warp", "composite", "total"}


def test_no_person_is_a_non_retryable_error(generator: OfflineGenerator, tshirt_png: bytes) -> None:
    coffee = encode_png(np.asarray(skimage_data.coffee(), np.uint8))
    with pytest.raises(NoPersonFoundError) as caught:
        generator.generate(image_request(coffee, (top(tshirt_png),)))
    assert caught.value.retryable is False
    assert "no person" in str(caught.value)


def test_undecodable_inputs_are_non_retryable(
    generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        generator.generate(image_request(b"not an image", (top(tshirt_png),)))
    assert caught.value.retryable is False
    blank = encode_png(uniform((250, 250, 250), 300, 300))
    with pytest.raises(GarmentNotFoundError) as no_garment:
        generator.generate(image_request(astronaut_png, (top(blank),)))
    assert no_garment.value.retryable is False


def test_unsupported_options_are_rejected_before_work(
    generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    for options in ({"width": 4096}, {"width": 511}, {"num_outputs": 0}):
        with pytest.raises(UnsupportedRequestError):
            generator.generate(image_request(astronaut_png, (top(tshirt_png),), **options))


def test_deterministic_for_a_seed_and_varied_between_outputs(
    generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    request = image_request(astronaut_png, (top(tshirt_png),), width=256, height=256, num_outputs=2, seed=7)
    first = generator.generate(request)
    again = generator.generate(request)
    assert [o.data for o in first.outputs] == [o.data for o in again.outputs]
    assert len(first.outputs) == 2
    assert first.outputs[0].data != first.outputs[1].data
    other = generator.generate(
        image_request(astronaut_png, (top(tshirt_png),), width=256, height=256, num_outputs=2, seed=8)
    )
    assert other.outputs[0].data != first.outputs[0].data


def test_back_view_uses_the_back_garment_image(generator: OfflineGenerator, astronaut_png: bytes) -> None:
    green = (30, 170, 60)
    garments = (
        top(encode_png(draw_tshirt(RED)), GarmentSide.FRONT),
        top(encode_png(draw_tshirt(green)), GarmentSide.BACK),
    )
    front = decode(generator.generate(image_request(astronaut_png, garments)).outputs[0].data)
    request = image_request(astronaut_png, garments)
    back_request = type(request)(
        kind=request.kind,
        garments=garments,
        model_photo=astronaut_png,
        pose_hint=PoseHint.BACK,
        options=request.options,
    )
    back = decode(generator.generate(back_request).outputs[0].data)
    assert near(front[CHEST], RED, 70).mean() > 0.8
    assert near(back[CHEST], green, 70).mean() > 0.8


def test_dress_covers_the_torso_and_bottom_sits_below_the_waist(
    generator: OfflineGenerator, astronaut_png: bytes, astronaut: np.ndarray
) -> None:
    purple, navy = (150, 40, 160), (30, 40, 160)
    dress = GarmentImage(encode_png(draw_dress(purple)), GarmentCategory.DRESS)
    out = decode(generator.generate(image_request(astronaut_png, (dress,))).outputs[0].data)
    assert near(out[CHEST], purple, 70).mean() > 0.7
    trousers = GarmentImage(encode_png(draw_trousers(navy)), GarmentCategory.BOTTOM)
    out = decode(generator.generate(image_request(astronaut_png, (trousers,))).outputs[0].data)
    new_navy = near(out, navy, 60) & ~near(astronaut, navy, 60)
    rows = np.flatnonzero(new_navy.sum(axis=1) > 5)
    assert rows.size > 0 and rows.min() > 300  # the waistband is below the chest


def test_transparent_garment_png_uses_its_alpha(generator: OfflineGenerator, astronaut_png: bytes) -> None:
    rgba = np.zeros((440, 400, 4), np.uint8)
    shirt = draw_tshirt((20, 160, 200))
    inside = np.any(shirt != 245, axis=2)
    rgba[..., :3] = shirt
    rgba[..., :3][~inside] = (20, 160, 200)  # same colour outside: only alpha tells them apart
    rgba[..., 3] = inside * 255
    garment = top(encode_png(rgba))
    out = decode(generator.generate(image_request(astronaut_png, (garment,))).outputs[0].data)
    assert near(out[CHEST], (20, 160, 200), 70).mean() > 0.8
    assert near(out[FACE], (20, 160, 200), 40).mean() < 0.02
