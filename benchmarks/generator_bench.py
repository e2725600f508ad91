"""Offline generator benchmark: ms per stage per image at 768x1024 and per video, peak RSS.

Run: uv run python benchmarks/generator_bench.py [--runs N] [--cold]

The request is the same every run, so after the warm-up its garment cut-out and fitted
background come from the generator's caches (as for a catalogue garment tried on many
photos); ``--cold`` clears the caches before every run (a garment and background never seen).
``wall`` is the elapsed time per image, ``cpu`` the process's CPU time (all threads) for it.
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import time

import cv2
import numpy as np
from PIL import Image
from skimage import data

from generator_worker.generation import (
    GarmentCategory,
    GarmentImage,
    GenerationOptions,
    GenerationRequest,
    JobKind,
)
from generator_worker.generation.offline import OfflineGenerator


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _tshirt() -> np.ndarray:
    img = np.full((880, 800, 3), 245, np.uint8)
    outline = np.array(
        [
            [260, 40],
            [340, 40],
            [400, 90],
            [460, 40],
            [540, 40],
            [740, 160],
            [680, 300],
            [600, 250],
            [600, 840],
            [200, 840],
            [200, 250],
            [120, 300],
            [60, 160],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [outline], (200, 40, 40))
    return img


def _report(title: str, timings: list[dict[str, float]]) -> None:
    print(f"\n{title} (median of {len(timings)} runs, ms)")
    for stage in timings[0]:
        values = [t.get(stage, 0.0) for t in timings]
        print(f"  {stage:<10} {statistics.median(values):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cold", action="store_true", help="clear the garment and background caches")
    args = parser.parse_args()
    model = _png(cv2.resize(data.astronaut(), (768, 768)))
    garment = GarmentImage(_png(_tshirt()), GarmentCategory.TOP)
    background = _png(np.full((1024, 768, 3), (40, 90, 220), np.uint8))
    generator = OfflineGenerator()
    image = GenerationRequest(
        JobKind.IMAGE, (garment,), model, background, options=GenerationOptions(width=768, height=1024)
    )
    video = GenerationRequest(
        JobKind.VIDEO,
        (garment,),
        model,
        background,
        options=GenerationOptions(width=768, height=1024, num_outputs=2, fps=24, seconds_per_output=2.0),
    )
    generator.generate(image)  # warm-up (graph initialisation)
    image_timings = []
    for _ in range(args.runs):
        if args.cold:
            generator.clear_caches()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = generator.generate(image)
        result.timings_ms["wall"] = (time.perf_counter() - start) * 1000
        # CPU time of the process (all its threads): steadier than wall time on a busy machine
        result.timings_ms["cpu"] = (time.process_time() - cpu_start) * 1000
        image_timings.append(result.timings_ms)
    _report(
        f"image 768x1024 PNG, one top, new background{' (cold caches)' if args.cold else ''}", image_timings
    )
    video_timings = []
    for _ in range(max(1, args.runs // 5)):
        result = generator.generate(video)
        video_timings.append(result.timings_ms)
    frames = result.outputs[0].frames
    _report(f"video 768x1024 H.264, 2 outputs, {frames} frames at 24 fps", video_timings)
    print(f"  per frame  {statistics.median(t['video'] for t in video_timings) / frames:8.1f}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak_mib:.0f} MiB")
    generator.close()


if __name__ == "__main__":
    main()
