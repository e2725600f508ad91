"""GPU throughput of the GPU backends at their published full size, with random weights.

    python3 -m benchmarks.gpu_bench [--models catvton,wan,qwen-image-edit] [--batches 1,2,4]
        [--steps N | --steps qwen-image-edit=10,wan=15] [--scale full|tiny]
        [--width 768 --height 1024] [--frames 17] [--budget-s 540] [--json out.json]
    python3 -m benchmarks.gpu_bench --check-layouts  # the published layouts, full size, no GPU needed
    python3 -m benchmarks.gpu_bench --memory         # weights per component and configuration
    python3 -m benchmarks.gpu_bench --smoke          # the production loaders on the device, tiny weights

Each model is built directly on the device in bf16 from the random-weight builders
(``benchmarks.random_weights``: nothing is downloaded, nothing is read from disk, no CPU
initialisation of billions of parameters), measured, then freed before the next:

* ``catvton``: the SD 1.5 inpainting UNet + VAE through ``CatVTONGenerator.generate_batch``
  (``batch`` requests in one denoising batch; box masks); its self-attention weights go through
  an attention file written in upstream's numbering and read back by the production loader;
* ``wan``: Wan2.2-TI2V-5B image-to-video (``--wan-variant``), ``--frames`` frames per video at
  the size the backend runs it (the job's aspect within the model's area: ``run_size``), VAE
  in fp32 as the backend loads it, ``batch`` videos of one image per call
  (``num_videos_per_prompt``); a "image" is a video here;
* ``qwen-image-edit``: Qwen-Image-Edit-2509 (20B transformer, Qwen2.5-VL-7B text encoder),
  ``batch`` images per call (``num_images_per_prompt``), person + garment as the two inputs.

For wan and qwen the prompts are encoded once (timed apart: ``text_s``) and the text encoder is
then freed, as the wan backend does: 11 GB (UMT5-XXL) and 16 GB (Qwen2.5-VL-7B) less on the
device, which leaves room for the VAE decode of a batch of 4 beside a 41 GB transformer.

Per batch size: one run with 1 denoising step, then one with ``--steps`` (default: the
backend's default steps); the difference gives seconds per step, from which the time at the
default steps is extrapolated when fewer were run (``s/img@default``). A model is warmed up
once (1 step, batch 1) before its first measurement. Peak memory is torch's
``max_memory_allocated`` during the two runs. An out-of-memory configuration is reported as
``OOM`` (larger batches of that model are skipped); configurations left when ``--budget-s``
has passed are reported as skipped. Each row is printed (and the JSON rewritten) as soon as it
is measured, so a run cut short still leaves its results.

``--check-layouts`` builds every full-size model on the ``meta`` device (shapes only, seconds,
no memory) and checks them against the published files: CatVTON's attention file in upstream's
numbering (80 tensors ``0.to_q.weight`` ... ``120.to_out.0.bias``, 49.57M parameters, the
aliases CatVTON issue 109 lists absent) read by the production loader's mapping, the parameter
counts of Qwen-Image-Edit's and Wan's components against the published sizes, and that the
tiny directories the builders write hold every file the production loaders require. It exits
1 on any failure; ``scripts/gpu_check.sh`` does not start without it passing.

``--memory`` prints the weights of each component (parameter counts from the meta models,
times the bytes of the dtype each is loaded in) and what each configuration keeps on the device
(docs/gpu.md has the table and the activation estimates).

Imports only torch, diffusers, transformers, tokenizers, safetensors, numpy and PIL (through
the GPU modules of ``generator_worker.generation`` and ``benchmarks.random_weights``): runs on
a machine with nothing else.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MODELS = ("catvton", "wan", "qwen-image-edit")
PROMPT = "The person in image 1 wears the garment of image 2; keep the face, pose and background."


@dataclass
class Row:
    model: str
    batch: int
    steps: int
    default_steps: int
    status: str = "ok"  # ok, OOM, skipped (...), error: ...
    one_step_s: float | None = None  # the batch with 1 denoising step
    measured_s: float | None = None  # the batch with ``steps`` steps
    s_per_step: float | None = None
    s_per_image: float | None = None  # measured, at ``steps``
    s_per_image_default: float | None = None  # at the default steps (extrapolated if needed)
    images_per_s_default: float | None = None
    peak_gb: float | None = None
    note: str = ""


@dataclass
class Bench:
    """A built model: ``run(batch, steps)`` generates ``batch`` outputs (synchronised)."""

    name: str
    default_steps: int
    run: Callable[[int, int], None]
    text_s: float | None = None
    weights_gb: float | None = None
    note: str = ""


# --- helpers --------------------------------------------------------------------------------


def out_of_memory(error: BaseException | None) -> bool:
    """The device ran out of memory (``torch.cuda.OutOfMemoryError`` by name, the allocator's
    message, or an error caused by either, e.g. a backend's retryable ``ResourceError``)."""
    depth = 0
    while error is not None and depth < 8:
        if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
            return True
        error = error.__cause__ or error.__context__
        depth += 1
    return False


def _sync(torch: Any) -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _free(torch: Any) -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _gb(value: float) -> float:
    return round(value / 2**30, 2)


def _person(width: int, height: int) -> Any:
    """A person-like picture: a figure on a plain background (only the shapes matter here)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (205, 210, 215))
    draw = ImageDraw.Draw(image)
    cx = width // 2
    draw.ellipse((cx - width // 12, height // 12, cx + width // 12, height // 4), fill=(230, 190, 160))
    draw.rectangle((cx - width // 6, height // 4, cx + width // 6, int(height * 0.62)), fill=(40, 60, 140))
    draw.rectangle(
        (cx - width // 7, int(height * 0.62), cx + width // 7, int(height * 0.95)), fill=(30, 30, 40)
    )
    return image


def _garment(width: int, height: int) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    w, h = width, height
    draw.polygon(
        [
            (0.3 * w, 0.05 * h),
            (0.7 * w, 0.05 * h),
            (0.95 * w, 0.25 * h),
            (0.8 * w, 0.35 * h),
            (0.75 * w, 0.95 * h),
            (0.25 * w, 0.95 * h),
            (0.2 * w, 0.35 * h),
            (0.05 * w, 0.25 * h),
        ],
        fill=(220, 30, 30),
    )
    return image


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- the models -----------------------------------------------------------------------------


def build_catvton(scale: str, device: str, width: int, height: int) -> Bench:
    import torch

    from benchmarks.random_weights.catvton import catvton_components, write_attention
    from generator_worker.generation.base import (
        GarmentCategory,
        GarmentImage,
        GenerationError,
        GenerationOptions,
        GenerationRequest,
        JobKind,
    )
    from generator_worker.generation.catvton import (
        DEFAULT_STEPS,
        CatVTONGenerator,
        attention_parameters,
        load_attention,
    )

    parts = catvton_components(scale, device=device)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="catvton-attention-") as folder:
        # the self-attention weights through the published file's layout: written in upstream's
        # numbering, zeroed, read back by the production loader
        path = write_attention(parts["unet"], Path(folder) / "model.safetensors")
        generator = CatVTONGenerator.from_components(parts["unet"], parts["vae"], parts["scheduler"])
        with torch.no_grad():
            for parameter in attention_parameters(generator.unet).values():
                parameter.zero_()
        load_attention(generator.unet, path)
    if getattr(generator, "_analyzer", None) is not None:  # box masks: the bench times the GPU
        generator._analyzer.close()
        generator._analyzer = None
    request = GenerationRequest(
        kind=JobKind.IMAGE,
        garments=(GarmentImage(_png(_garment(width // 2, height // 2)), GarmentCategory.TOP),),
        model_photo=_png(_person(width, height)),
        options=GenerationOptions(width=width, height=height, seed=1),
    )

    def run(batch: int, steps: int) -> None:
        generator.steps = steps
        generator.batch = batch
        for result in generator.generate_batch([request] * batch):
            if isinstance(result, GenerationError):
                raise result
        _sync(torch)

    what = "SD1.5-inpainting UNet 860M + VAE" if scale == "full" else "tiny UNet + VAE"
    return Bench("catvton", DEFAULT_STEPS, run, note=f"{what}; box masks")


def build_wan(scale: str, device: str, width: int, height: int, frames: int, variant: str) -> Bench:
    import torch

    from benchmarks.random_weights.wan import build_pipeline
    from generator_worker.generation.wan_video import (
        DEFAULT_GUIDANCE,
        DEFAULT_NEGATIVE_PROMPT,
        DEFAULT_PROMPT,
        DEFAULT_STEPS,
        encode_prompts,
        run_size,
        wan_family_of,
    )

    pipeline = build_pipeline(variant, scale, device=device, image_to_video=True)
    family = wan_family_of(pipeline)
    multiple = int(pipeline.vae_scale_factor_spatial) * int(pipeline.transformer.config.patch_size[1])
    width, height = run_size(width, height, family.max_area, multiple) if scale == "full" else (width, height)
    pipeline.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    positive, negative = encode_prompts(pipeline, [DEFAULT_PROMPT, DEFAULT_NEGATIVE_PROMPT], device)
    _sync(torch)
    text_s = time.perf_counter() - start
    pipeline.text_encoder = None  # as the backend does: the prompts never change
    _free(torch)
    image = _person(width, height)

    def run(batch: int, steps: int) -> None:
        pipeline(
            image=image,
            prompt_embeds=positive,
            negative_prompt_embeds=negative,
            height=height,
            width=width,
            num_frames=frames,
            num_inference_steps=steps,
            guidance_scale=DEFAULT_GUIDANCE,
            num_videos_per_prompt=batch,
            generator=torch.Generator("cpu").manual_seed(1),
            output_type="np",
        )
        _sync(torch)

    return Bench(
        "wan",
        DEFAULT_STEPS,
        run,
        text_s=text_s,
        note=f"{variant} ({scale}), {frames} frames per video at {width}x{height}",
    )


def build_qwen(scale: str, device: str, width: int, height: int) -> Bench:
    import torch

    from benchmarks.random_weights.qwen import qwen_image_edit_pipeline
    from generator_worker.generation.qwen_edit import DEFAULT_GUIDANCE, DEFAULT_STEPS, NEGATIVE_PROMPT

    pipeline = qwen_image_edit_pipeline(scale, device=device)  # type: ignore[arg-type]
    pipeline.set_progress_bar_config(disable=True)
    images = [_person(width, height), _garment(width // 2, height // 2)]
    embeds: dict[str, Any] = {}
    note = "Qwen-Image-Edit-2509: 20B MMDiT" if scale == "full" else "tiny Qwen-Image-Edit"
    text_s = None
    try:  # encode the prompts once, then free the 16 GB text encoder
        from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

        condition = []
        for image in images:
            w, h = plus.calculate_dimensions(plus.CONDITION_IMAGE_SIZE, image.size[0] / image.size[1])
            condition.append(pipeline.image_processor.resize(image, h, w))
        start = time.perf_counter()
        with torch.no_grad():
            embeds["prompt_embeds"], embeds["prompt_embeds_mask"] = pipeline.encode_prompt(
                prompt=PROMPT, image=condition, device=device
            )
            embeds["negative_prompt_embeds"], embeds["negative_prompt_embeds_mask"] = pipeline.encode_prompt(
                prompt=NEGATIVE_PROMPT, image=condition, device=device
            )
        _sync(torch)
        text_s = time.perf_counter() - start
        pipeline.text_encoder = None
        _free(torch)
        note += "; prompts encoded once, text encoder freed"
    except Exception as error:  # noqa: BLE001 - another diffusers release: keep the encoder
        print(
            f"# qwen-image-edit: prompt caching unavailable ({type(error).__name__}: {error}); "
            "the text encoder stays and runs each call",
            flush=True,
        )
        embeds = {"prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT}
        note += "; text encoder runs each call"

    def run(batch: int, steps: int) -> None:
        pipeline(
            image=images,
            true_cfg_scale=DEFAULT_GUIDANCE,
            width=width,
            height=height,
            num_inference_steps=steps,
            num_images_per_prompt=batch,
            generator=torch.Generator("cpu").manual_seed(1),
            output_type="pil",
            **embeds,
        )
        _sync(torch)

    return Bench("qwen-image-edit", DEFAULT_STEPS, run, text_s=text_s, note=note)


# --- measuring ------------------------------------------------------------------------------


def _timed(torch: Any, run: Callable[[int, int], None], batch: int, steps: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        run(batch, steps)
    return time.perf_counter() - start


def measure(torch: Any, bench: Bench, batch: int, steps: int) -> Row:
    row = Row(bench.name, batch, steps, bench.default_steps, note=bench.note)
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    one = _timed(torch, bench.run, batch, 1)
    full = one if steps == 1 else _timed(torch, bench.run, batch, steps)
    row.one_step_s, row.measured_s = round(one, 3), round(full, 3)
    per_step = (full - one) / (steps - 1) if steps > 1 else None
    row.s_per_step = None if per_step is None else round(per_step, 4)
    row.s_per_image = round(full / batch, 3)
    at_default = full
    if steps != bench.default_steps and per_step is not None:
        at_default = one + (bench.default_steps - 1) * max(per_step, 0.0)
    row.s_per_image_default = round(at_default / batch, 3)
    row.images_per_s_default = round(batch / at_default, 4) if at_default > 0 else None
    if cuda:
        row.peak_gb = _gb(torch.cuda.max_memory_allocated())
    return row


HEADER = (
    f"{'model':<16} {'batch':>5} {'steps':>5} {'status':<10} {'s/batch':>8} {'s/step':>7} "
    f"{'s/img':>7} {'s/img@def':>9} {'img/s@def':>9} {'peak GB':>7}"
)


def line(row: Row) -> str:
    def num(value: float | None, width: int, digits: int = 3) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    steps = f"{row.steps}/{row.default_steps}"
    return (
        f"{row.model:<16} {row.batch:>5} {steps:>5} {row.status[:10]:<10} {num(row.measured_s, 8)} "
        f"{num(row.s_per_step, 7)} {num(row.s_per_image, 7)} {num(row.s_per_image_default, 9)} "
        f"{num(row.images_per_s_default, 9)} {num(row.peak_gb, 7, 2)}"
    )


def environment(torch: Any, device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    for name in ("diffusers", "transformers"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gb"] = _gb(props.total_memory)
    return info


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument(
        "--steps",
        default=None,
        help="denoising steps: N for every model, or per model (qwen-image-edit=10,wan=15); "
        "default: each backend's default",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="only load tiny random-weight directories through the production loaders on the device "
        "and generate once with each (no timing)",
    )
    parser.add_argument(
        "--check-layouts",
        action="store_true",
        help="check the full-size models and the tiny directories against the published layouts "
        "(meta device: no GPU, no memory); exit 1 on a difference",
    )
    parser.add_argument(
        "--memory", action="store_true", help="print the weights of every full-size component and exit"
    )
    parser.add_argument("--scale", choices=("full", "tiny"), default="full")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=17, help="frames per wan video (4k+1)")
    parser.add_argument("--wan-variant", default="wan2.2-ti2v-5b")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip what is left after this")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    steps: dict[str, int] = {}
    for part in (args.steps or "").split(","):
        if not part.strip():
            continue
        model, _, value = part.rpartition("=")
        try:
            number = int(value)
        except ValueError:
            parser.error(f"--steps: {part!r} is not N or model=N")
        if number < 1 or (model and model.strip() not in MODELS):
            parser.error(f"--steps: {part!r} (at least 1, for a known model)")
        for name in [model.strip()] if model else MODELS:
            steps[name] = number
    args.steps = steps
    return args


def smoke(device: str) -> bool:
    """Tiny random-weight directories in the published layouts, loaded by the production loaders
    on ``device`` (bf16 on CUDA) and run once each; prints PASS or FAIL per backend."""
    import tempfile

    from generator_worker.generation.base import (
        GarmentCategory,
        GarmentImage,
        GenerationOptions,
        GenerationRequest,
        GenerationResult,
        Generator,
        JobKind,
    )
    from generator_worker.generation.hf_layout import GpuOptions

    request = GenerationRequest(
        kind=JobKind.IMAGE,
        garments=(GarmentImage(_png(_garment(96, 128)), GarmentCategory.TOP),),
        model_photo=_png(_person(192, 256)),
        options=GenerationOptions(width=128, height=160, seed=1),
    )

    def qwen(folder: Path) -> str:
        from benchmarks.random_weights.qwen import write_qwen_image_edit
        from generator_worker.generation.qwen_edit import QwenImageEditGenerator

        write_qwen_image_edit(folder)
        generator = QwenImageEditGenerator(GpuOptions(model_dir=folder, device=device, steps=2))
        output = generator.generate(request).outputs[0]
        generator.close()
        return f"{output.media_type} {output.width}x{output.height}"

    def catvton(folder: Path) -> str:
        from benchmarks.random_weights.catvton import write_catvton
        from generator_worker.generation.catvton import CatVTONGenerator

        write_catvton(folder)
        generator = CatVTONGenerator(GpuOptions(model_dir=folder, device=device, steps=2, batch=2))
        if getattr(generator, "_analyzer", None) is not None:  # box masks: a drawn person has no pose
            generator._analyzer.close()
            generator._analyzer = None
        results = generator.generate_batch([request, request])
        generator.close()
        outputs = [r.outputs[0] for r in results if isinstance(r, GenerationResult)]
        if len(outputs) != 2:
            raise RuntimeError(f"generate_batch gave {results}")
        return f"2 x {outputs[0].media_type} {outputs[0].width}x{outputs[0].height}"

    def wan(folder: Path) -> str:
        from benchmarks.random_weights.wan import write_random_wan
        from generator_worker.generation.qwen_edit import QWEN_EDIT_INFO
        from generator_worker.generation.wan_video import WanVideoGenerator

        class Still(Generator):
            info = QWEN_EDIT_INFO

            def generate(self, request: GenerationRequest) -> GenerationResult:
                raise NotImplementedError

        write_random_wan(folder)
        generator = WanVideoGenerator(folder, Still(), device=device, steps=2, max_area=128 * 160)
        frames = generator._animate(_png(_person(128, 160)), 128, 160, 9, 1, 0)
        shape = frames[0].shape
        if len(frames) != 9 or shape != (160, 128, 3):
            raise RuntimeError(f"{len(frames)} frames of {shape}")
        return f"{len(frames)} frames {shape[1]}x{shape[0]} (dtype {generator.dtype})"

    ok = True
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        for name, check in (("qwen-image-edit", qwen), ("catvton", catvton), ("wan", wan)):
            start = time.perf_counter()
            try:
                what = check(Path(tmp) / name)
                print(
                    f"# smoke {name}: PASS on {device} in {time.perf_counter() - start:.1f} s: {what}",
                    flush=True,
                )
            except Exception as error:  # noqa: BLE001 - reported, the others still run
                ok = False
                print(f"# smoke {name}: FAIL on {device}: {type(error).__name__}: {error}", flush=True)
    return ok


# --- the published layouts -------------------------------------------------------------------

BILLION = 1e9
# Published sizes the full-size configurations must reproduce, in parameters (low, high): the
# CatVTON README ("49.57M parameters trainable"), the model cards' sizes (Qwen-Image: a 20B
# MMDiT; Qwen2.5-VL-7B-Instruct: 8.29B; Wan2.2-TI2V-5B: 5B; Wan2.1 I2V "14B" is 16.4B with its
# image cross-attention, A14B two 14B experts; UMT5-XXL's encoder 5.7B; CLIP ViT-H/14's vision
# tower 0.63B) and the VAE checkpoints' sizes (Wan2.2_VAE.pth 2.8 GB in fp32: 0.7B).
UMT5_XXL_ENCODER = (5.6 * BILLION, 5.8 * BILLION)
WAN14B_EXPERT = (14.0 * BILLION, 14.6 * BILLION)
CATVTON_ATTENTION_PARAMETERS = 49_574_080
PUBLISHED_PARAMETERS: dict[str, tuple[float, float]] = {
    "catvton.unet": (0.85 * BILLION, 0.87 * BILLION),
    "qwen.transformer": (20.3 * BILLION, 20.5 * BILLION),
    "qwen.text_encoder": (8.2 * BILLION, 8.4 * BILLION),
    "qwen.vae": (0.1 * BILLION, 0.15 * BILLION),
    "wan2.2-ti2v-5b.transformer": (4.9 * BILLION, 5.1 * BILLION),
    "wan2.2-ti2v-5b.text_encoder": UMT5_XXL_ENCODER,
    "wan2.2-ti2v-5b.vae": (0.6 * BILLION, 0.8 * BILLION),
    "wan2.1-i2v-14b-480p.transformer": (16.0 * BILLION, 16.8 * BILLION),
    "wan2.1-i2v-14b-480p.text_encoder": UMT5_XXL_ENCODER,
    "wan2.1-i2v-14b-480p.image_encoder": (0.6 * BILLION, 0.66 * BILLION),
    "wan2.2-i2v-a14b.transformer": WAN14B_EXPERT,
    "wan2.2-i2v-a14b.transformer_2": WAN14B_EXPERT,
    "wan2.2-i2v-a14b.text_encoder": UMT5_XXL_ENCODER,
}
# Keys of the published Qwen-Image transformer checkpoint (its safetensors index), which the
# diffusers class loads by name.
QWEN_TRANSFORMER_KEYS = (
    "img_in.weight",
    "txt_in.weight",
    "txt_norm.weight",
    "time_text_embed.timestep_embedder.linear_1.weight",
    "transformer_blocks.0.attn.to_q.weight",
    "transformer_blocks.59.attn.to_add_out.weight",
    "norm_out.linear.weight",
    "proj_out.weight",
)
# CatVTON issue 109: names of shared tensors missing from the published attention file
CATVTON_ABSENT_ALIASES = (
    "1.weight",
    "2.weight",
    "3.weight",
    "4.0.weight",
    "5.bias",
    "100.0.weight",
    "101.bias",
)
CATVTON_BLOCK_TENSORS = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias")


def _count(module: Any) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _meta_models() -> dict[str, Any]:
    """Every full-size model on the ``meta`` device (shapes only)."""
    import torch

    from benchmarks.random_weights.catvton import catvton_components
    from benchmarks.random_weights.qwen import qwen_image_edit_pipeline
    from benchmarks.random_weights.wan import VARIANTS, build_pipeline

    models: dict[str, Any] = {}
    catvton = catvton_components("full", device="meta", dtype=torch.bfloat16)
    models["catvton.unet"], models["catvton.vae"] = catvton["unet"], catvton["vae"]
    qwen = qwen_image_edit_pipeline("full", device="meta", dtype=torch.bfloat16)
    for part in ("transformer", "text_encoder", "vae"):
        models[f"qwen.{part}"] = getattr(qwen, part)
    for variant in VARIANTS:
        wan = build_pipeline(variant, "full", device="meta", dtype=torch.bfloat16, image_to_video=True)
        for part in ("transformer", "transformer_2", "text_encoder", "vae", "image_encoder"):
            module = getattr(wan, part, None)
            if module is not None:
                models[f"{variant}.{part}"] = module
    return models


def check_layouts() -> bool:
    """The full-size models and the tiny directories against the published layouts (see the
    module docstring); prints PASS or FAIL per check, True when all pass."""
    import torch

    from benchmarks.random_weights.catvton import attention_state_dict, catvton_components
    from generator_worker.generation import catvton

    results: list[tuple[str, list[str]]] = []

    # CatVTON's attention file, full size: upstream's procedure (the writer) and the
    # production loader's mapping must both give the published numbering
    problems: list[str] = []
    unet = catvton_components("full", device="meta", dtype=torch.float32)["unet"]
    mapping = catvton.attention_parameters(unet)
    state = attention_state_dict(unet)
    spec = {f"{8 * block}.{name}" for block in range(16) for name in CATVTON_BLOCK_TENSORS}
    if set(state) != spec:
        problems.append(f"written keys differ from the published 80: {sorted(set(state) ^ spec)[:6]}")
    if set(mapping) != spec:
        problems.append(f"loader keys differ from the published 80: {sorted(set(mapping) ^ spec)[:6]}")
    wrong = [k for k in spec & set(state) & set(mapping) if tuple(state[k].shape) != tuple(mapping[k].shape)]
    if wrong:
        problems.append(f"shapes differ: {sorted(wrong)[:4]}")
    total = sum(value.numel() for value in state.values())
    if total != CATVTON_ATTENTION_PARAMETERS:
        problems.append(f"{total} attention parameters, published 49,574,080")
    present = [alias for alias in CATVTON_ABSENT_ALIASES if alias in state]
    if present:
        problems.append(f"aliases written that the published file lacks: {present}")
    modules = dict(unet.named_modules())
    second = modules["down_blocks.0.attentions.1.transformer_blocks.0.attn1"].to_q.weight
    if mapping.get("8.to_q.weight") is not second:
        problems.append("8.to_q.weight does not land in the second attn1 (down_blocks.0.attentions.1)")
    mid = modules["mid_block.attentions.0.transformer_blocks.0.attn1"].to_out[0].bias
    if mapping.get("120.to_out.0.bias") is not mid:
        problems.append("120.to_out.0.bias does not land in the mid block's attn1")
    if catvton.published_key("13.bias") != "8.to_out.0.bias":
        problems.append(f"alias 13.bias read as {catvton.published_key('13.bias')}")
    results.append(("catvton attention file (SD 1.5 full size, upstream numbering)", problems))

    # published sizes of every full-size component
    problems = []
    models = _meta_models()
    for name, (low, high) in PUBLISHED_PARAMETERS.items():
        if name not in models:
            problems.append(f"{name}: not built")
            continue
        count = _count(models[name])
        if not low <= count <= high:
            problems.append(
                f"{name}: {count / BILLION:.3f}B, published {low / BILLION:.2f}..{high / BILLION:.2f}B"
            )
    keys = set(models["qwen.transformer"].state_dict())
    missing = [key for key in QWEN_TRANSFORMER_KEYS if key not in keys]
    if missing:
        problems.append(f"qwen transformer lacks published keys {missing}")
    results.append(("full-size parameter counts and names", problems))

    # the tiny directories hold what the production loaders require
    problems = []
    with tempfile.TemporaryDirectory(prefix="layouts-") as tmp:
        problems += _tiny_layout_problems(Path(tmp))
    results.append(("tiny directories in the published file layouts", problems))

    for name, found in results:
        status = "PASS" if not found else "FAIL: " + "; ".join(found)
        print(f"# layout {name}: {status}", flush=True)
    return all(not found for _, found in results)


def _tiny_layout_problems(root: Path) -> list[str]:
    from benchmarks.random_weights.catvton import ATTENTION_FILE, write_catvton
    from benchmarks.random_weights.qwen import write_qwen_image_edit
    from benchmarks.random_weights.wan import VARIANTS, write_random_wan
    from generator_worker.generation import catvton, hf_layout, qwen_edit, wan_video

    problems: list[str] = []
    folder = write_qwen_image_edit(root / "qwen")
    problems += [f"qwen: missing {m}" for m in hf_layout.missing_files(folder, qwen_edit.REQUIRED)]
    folder = write_catvton(root / "catvton")
    problems += [f"catvton: missing {m}" for m in hf_layout.missing_files(folder, catvton.REQUIRED)]
    from safetensors import safe_open

    with safe_open(str(folder / ATTENTION_FILE), framework="pt") as handle:
        keys = list(handle.keys())
    odd = [key for key in keys if int(key.split(".", 1)[0]) % catvton.ATTENTION_SLOTS]
    if odd:
        problems.append(f"catvton: attention keys outside upstream's 8-slot numbering: {odd[:4]}")
    expected = {
        "wan2.2-ti2v-5b": wan_video.WAN22_TI2V_5B,
        "wan2.1-i2v-14b-480p": wan_video.WAN21_I2V_480P,
        "wan2.2-i2v-a14b": wan_video.WAN22_I2V_A14B,
    }
    for variant in VARIANTS:
        folder = write_random_wan(root / variant, variant)
        problems += [
            f"{variant}: missing {m}"
            for m in hf_layout.missing_files(folder, wan_video.required_files(folder))
        ]
        family = wan_video.wan_family(folder)
        if family != expected[variant]:
            problems.append(f"{variant}: read as {family.name}")
    return problems


def memory_rows() -> list[tuple[str, int, int]]:
    """(component, parameters, bytes as loaded) of every full-size component: bf16, except
    Wan's VAE and image encoder (fp32, as the backend loads them)."""
    rows = []
    for name, module in _meta_models().items():
        fp32 = name.startswith("wan") and name.endswith((".vae", ".image_encoder"))
        count = _count(module)
        rows.append((name, count, count * (4 if fp32 else 2)))
    return rows


def memory_table() -> str:
    """The weights table (see docs/gpu.md for what each configuration keeps on the device)."""
    lines = [f"{'component':<38} {'params':>9} {'GiB as loaded':>14}"]
    for name, count, size in memory_rows():
        lines.append(f"{name:<38} {count / BILLION:>8.3f}B {size / 2**30:>13.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    if args.check_layouts:
        return 0 if check_layouts() else 1
    if args.memory:
        print(memory_table(), flush=True)
        return 0
    import torch

    from generator_worker.generation import hf_layout

    hf_layout.force_offline()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        return 0 if smoke(device) else 1
    report: dict[str, Any] = {"environment": environment(torch, device), "scale": args.scale, "models": {}}
    report["size"] = f"{args.width}x{args.height}"
    rows: list[Row] = []

    def save() -> None:
        report["rows"] = [asdict(r) for r in rows]
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))

    print(
        f"# gpu_bench {json.dumps(report['environment'])} scale={args.scale} size={report['size']}",
        flush=True,
    )
    print(HEADER, flush=True)
    builders: dict[str, Callable[[], Bench]] = {
        "catvton": lambda: build_catvton(args.scale, device, args.width, args.height),
        "wan": lambda: build_wan(args.scale, device, args.width, args.height, args.frames, args.wan_variant),
        "qwen-image-edit": lambda: build_qwen(args.scale, device, args.width, args.height),
    }
    failed = False
    for name in args.models:
        left = args.budget_s - (time.perf_counter() - started)
        if left <= 0:
            for batch in args.batches:
                rows.append(Row(name, batch, args.steps.get(name, 0), 0, status="skipped (budget)"))
                print(line(rows[-1]), flush=True)
            continue
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        build_start = time.perf_counter()
        bench: Bench | None = None
        try:
            bench = builders[name]()
            _sync(torch)
            build_s = time.perf_counter() - build_start
            if device.startswith("cuda"):
                bench.weights_gb = _gb(torch.cuda.memory_allocated())
            with torch.inference_mode():
                warm_start = time.perf_counter()
                bench.run(1, 1)
            warm_s = time.perf_counter() - warm_start
            report["models"][name] = {
                "build_s": round(build_s, 2),
                "warmup_s": round(warm_s, 2),
                "text_s": None if bench.text_s is None else round(bench.text_s, 3),
                "weights_gb": bench.weights_gb,
                "note": bench.note,
            }
            print(
                f"# {name}: built in {build_s:.1f} s, {bench.weights_gb} GB on the device, "
                f"warm-up {warm_s:.1f} s, prompts encoded in {bench.text_s} s; {bench.note}",
                flush=True,
            )
        except Exception as error:  # noqa: BLE001 - reported, the next model still runs
            status = "OOM" if out_of_memory(error) else f"error: {type(error).__name__}: {error}"
            print(f"# {name}: build or warm-up failed: {status}", flush=True)
            report["models"][name] = {"error": status}
            failed = failed or status != "OOM"
            rows.extend(
                Row(name, b, args.steps.get(name, 0), 0, status=status.split(":")[0]) for b in args.batches
            )
            bench = None
        if bench is not None:
            steps = args.steps.get(name, bench.default_steps)
            out_of_room = False
            for batch in args.batches:
                if out_of_room:
                    rows.append(Row(name, batch, steps, bench.default_steps, status="skipped (OOM)"))
                elif time.perf_counter() - started > args.budget_s:
                    rows.append(Row(name, batch, steps, bench.default_steps, status="skipped (budget)"))
                else:
                    try:
                        rows.append(measure(torch, bench, batch, steps))
                    except Exception as error:  # noqa: BLE001 - reported per configuration
                        oom = out_of_memory(error)
                        status = "OOM" if oom else f"error: {type(error).__name__}: {error}"
                        rows.append(Row(name, batch, steps, bench.default_steps, status=status))
                        out_of_room = oom
                        failed = failed or not oom
                        _free(torch)
                print(line(rows[-1]), flush=True)
                save()
        bench = None
        _free(torch)
        save()
    print(
        f"\n# all results ({time.perf_counter() - started:.0f} s in all; s/img@def: at the backend's "
        "default steps, extrapolated from the 1-step and --steps runs when --steps is lower)"
    )
    print(HEADER)
    for row in rows:
        print(line(row))
    for row in rows:
        if row.status.startswith("error"):
            print(f"# {row.model} batch {row.batch}: {row.status}")
    save()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
