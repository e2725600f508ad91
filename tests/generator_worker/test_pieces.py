"""Smaller pieces: garment cut-out and anchors, cropping, mediapipe staying offline."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from generator_worker.generation import GarmentCategory, GarmentImage, GenerationError, NoPersonFoundError
from generator_worker.generation.garment import cut_out
from generator_worker.generation.imaging import cover_box
from generator_worker.generation.offline import OfflineGenerator
from generator_worker.generation.pose import MODEL_COMPLEXITY, PersonAnalyzer
from tests.generator_worker.conftest import draw_trousers, draw_tshirt, encode_png, image_request


def test_tshirt_cut_out_and_anchors() -> None:
    cutout = cut_out(draw_tshirt(), GarmentCategory.TOP)
    assert cutout.size == (341, 401)  # cropped to the silhouette
    a = cutout.anchors
    assert a["shoulder_l"][0] < a["neck"][0] < a["shoulder_r"][0]
    assert a["sleeve_l"][0] < a["shoulder_l"][0] and a["sleeve_r"][0] > a["shoulder_r"][0]
    assert a["hem_l"][1] == a["hem_r"][1] == 400
    assert cutout.alpha[200, 170] > 0.99 and cutout.alpha[390, 5] < 0.01


def test_trousers_have_a_crotch_and_two_legs() -> None:
    a = cut_out(draw_trousers(), GarmentCategory.BOTTOM).anchors
    assert {"waist_l", "waist_r", "crotch", "hem_inner_l", "hem_inner_r"} <= set(a)
    assert a["hem_l"][0] < a["hem_inner_l"][0] < a["crotch"][0] < a["hem_inner_r"][0]


def edge_strip_garment() -> np.ndarray:
    """Issue 12's garment: its alpha mask's top band is only a strip at the right edge, so an
    anchor's column, offset from that extreme, fell outside the mask (``IndexError``)."""
    rgba = np.zeros((800, 1000, 4), np.uint8)
    rgba[..., :3] = (200, 30, 40)
    rgba[0:400, 986:1000, 3] = 255
    rgba[400:800, 100:1000, 3] = 255
    return rgba


@pytest.mark.parametrize("category", list(GarmentCategory))
def test_anchors_of_a_garment_whose_top_is_at_the_edge_stay_in_the_mask(category: GarmentCategory) -> None:
    cutout = cut_out(edge_strip_garment(), category)
    width, height = cutout.size
    for name, (x, y) in cutout.anchors.items():
        assert 0 <= x < width and 0 <= y < height, (name, x, y)


def test_the_edge_strip_garment_ends_in_a_result_or_a_declared_error(
    generator: OfflineGenerator, astronaut_png: bytes
) -> None:
    for category in (GarmentCategory.TOP, GarmentCategory.BOTTOM):
        garment = GarmentImage(encode_png(edge_strip_garment()), category)
        try:
            result = generator.generate(image_request(astronaut_png, (garment,)))
        except GenerationError:
            continue  # declared: the worker fails the job with its code
        assert result.outputs


def test_cover_box_keeps_the_aspect_and_the_person() -> None:
    assert cover_box(512, 512, 768, 1024, (200.0, 256.0)) == (8, 0, 384, 512)
    assert cover_box(400, 1000, 400, 400, (200.0, 100.0)) == (0, 0, 400, 400)


def test_mediapipe_runs_with_the_network_blocked(
    monkeypatch: pytest.MonkeyPatch, astronaut: np.ndarray
) -> None:
    import mediapipe

    bundled = Path(mediapipe.__file__).parent / "modules"
    assert MODEL_COMPLEXITY == 1
    assert (bundled / "pose_landmark" / "pose_landmark_full.tflite").is_file()
    assert (bundled / "selfie_segmentation" / "selfie_segmentation.tflite").is_file()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    analyzer = PersonAnalyzer()
    try:
        person = analyzer.analyze(np.ascontiguousarray(astronaut))
        assert person.mask.shape == (512, 512)
        assert person.mask[150, 220] > 0.9 and person.mask[50, 20] < 0.1  # face vs backdrop
        assert 150 < person.shoulder_width() < 250
        with pytest.raises(NoPersonFoundError):
            analyzer.landmarks(np.full((256, 256, 3), 128, np.uint8))
    finally:
        analyzer.close()
