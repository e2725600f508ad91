"""The ``qwen-image-edit`` backend: Qwen-Image-Edit-Plus (2509 or 2511, Apache-2.0) through
``diffusers.QwenImageEditPlusPipeline``, loaded from a local directory in the published layout
(``local_files_only=True``, ``HF_HUB_OFFLINE=1``; nothing is downloaded).

The person photo is Picture 1, the garment photos Picture 2 (and 3); a prompt written from each
garment's category (top, bottom, dress, outer) and side (front, back) asks the model to dress the
person in them and keep everything else. A front and a back photo of the same category are two
views of one garment, not two garments. Images only.

An optional few-step LoRA (e.g. Qwen-Image-Lightning) is fused into the transformer at start.
A Lightning LoRA (``VTO_GPU_LORA_SCHEDULER=lightning``, or ``auto`` and "lightning" in the file
name, as lightx2v publishes them) also installs the scheduler it was distilled with (shift 3,
:data:`LIGHTNING_SCHEDULER`) and, unless set, its steps (from the file name, e.g. ``8steps``)
and guidance 1 (no classifier-free guidance).

Qwen-Image does not run in fp16 (its activations overflow: NaN, black images): fp16, asked for
or picked by ``auto`` on a GPU without bfloat16, is refused at start. One pipeline call at a
time per generator (a lock: the flow-matching scheduler's step index and sigmas are shared
state). ``offload`` and ``vae_tiling`` (``VTO_GPU_OFFLOAD``, ``VTO_GPU_VAE_TILING``) trade speed
for memory.

Required layout (``VTO_GPU_MODEL_DIR``), as ``huggingface-cli download Qwen/Qwen-Image-Edit-2509``
writes it: ``model_index.json``; ``transformer/`` and ``vae/`` (``config.json`` and
``diffusion_pytorch_model.safetensors`` or its sharded index); ``text_encoder/`` (``config.json``
and ``model.safetensors`` or its sharded index); ``tokenizer/`` and ``processor/`` (tokenizer and
processor configs); ``scheduler/scheduler_config.json``.

Imports only torch, diffusers, transformers, PIL and numpy (lazily, when built), plus
``generator_worker.generation.base`` and its PIL-only helpers.
"""

from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path
from typing import Any

from generator_worker.generation import hf_layout
from generator_worker.generation.base import (
    BackendInfo,
    BackendUnavailableError,
    GarmentCategory,
    GarmentImage,
    GarmentSide,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Generator,
    JobKind,
    PoseHint,
    ResourceError,
)
from generator_worker.generation.gpu_images import cover, decode, image_result, round_to

NAME = "qwen-image-edit"
DEFAULT_STEPS = 40
DEFAULT_GUIDANCE = 4.0  # true_cfg_scale; 1.0 disables classifier-free guidance (few-step LoRAs)
NEGATIVE_PROMPT = " "
LIGHTNING_DEFAULT_STEPS = 8
LIGHTNING_GUIDANCE = 1.0
# The scheduler Qwen-Image-Lightning was distilled with: ModelTC/Qwen-Image-Lightning,
# generate_with_diffusers.py (commit 342260e, lines 82-97): a FlowMatchEulerDiscreteScheduler
# with the base model's exponential dynamic shifting pinned to shift 3 (base_shift = max_shift =
# log 3) and no terminal stretch (shift_terminal None; the base model's config has 0.02).
LIGHTNING_SCHEDULER: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": math.log(3),
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": math.log(3),
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": None,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
LORA_SCHEDULERS = ("auto", "lightning", "base")

REQUIRED: tuple[hf_layout.Need, ...] = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "transformer/config.json",
    hf_layout.weights("transformer"),
    "vae/config.json",
    hf_layout.weights("vae"),
    "text_encoder/config.json",
    hf_layout.weights("text_encoder", "model"),
    "tokenizer/tokenizer_config.json",
    ("tokenizer/tokenizer.json", "tokenizer/vocab.json"),
    ("processor/preprocessor_config.json", "processor/processor_config.json"),
)

QWEN_EDIT_INFO = BackendInfo(
    name=NAME,
    license="Apache-2.0 (Qwen-Image-Edit-2509/2511 weights and code)",
    commercial_use=True,
    job_kinds=frozenset({JobKind.IMAGE}),
    categories=frozenset(GarmentCategory),
    needs_background=False,
    min_size=(128, 128),
    max_size=(2048, 2048),
    max_garments=2,
    max_outputs=4,
    requires_weights=True,
    notes="Qwen-Image-Edit-Plus from VTO_GPU_MODEL_DIR only (local_files_only, HF_HUB_OFFLINE=1); "
    "person photo plus up to two garment photos; optional few-step LoRA (VTO_GPU_LORA_PATH).",
)

_GARMENT_WORDS = {
    GarmentCategory.TOP: "top (shirt, T-shirt, blouse or sweater)",
    GarmentCategory.BOTTOM: "bottom (trousers, jeans, shorts or skirt)",
    GarmentCategory.DRESS: "dress",
    GarmentCategory.OUTER: "outer layer (jacket or coat)",
}
_WEAR = {
    GarmentCategory.TOP: "on the upper body, replacing the current top",
    GarmentCategory.BOTTOM: "on the lower body, replacing the current trousers or skirt",
    GarmentCategory.DRESS: "replacing the current top and bottom",
    GarmentCategory.OUTER: "over the current clothes, keeping what is worn underneath",
}


def _pictures(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"Picture {numbers[0]}"
    return "Pictures " + ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"


def _garment_views(garments: tuple[GarmentImage, ...]) -> list[dict[GarmentSide, int]]:
    """The garments the photos show, in order: a front and a back photo of the same category
    are two views of one garment; any other photo is a garment of its own."""
    views: list[dict[GarmentSide, int]] = []
    categories: list[GarmentCategory] = []
    for number, garment in enumerate(garments, start=2):
        for seen, category in zip(views, categories, strict=True):
            if category is garment.category and garment.side not in seen:
                seen[garment.side] = number
                break
        else:
            views.append({garment.side: number})
            categories.append(garment.category)
    return views


def build_prompt(garments: tuple[GarmentImage, ...], pose_hint: PoseHint = PoseHint.AUTO) -> str:
    """The edit instruction: Picture 1 is the person, Picture ``n + 2`` the ``n``-th garment photo."""
    parts = ["Picture 1 shows a person."]
    views = _garment_views(garments)
    dressing = []
    for seen in views:
        first = garments[min(seen.values()) - 2]
        words = _GARMENT_WORDS[first.category]
        numbers = sorted(seen.values())
        if len(seen) == 2:
            front, back = seen[GarmentSide.FRONT], seen[GarmentSide.BACK]
            parts.append(f"Picture {front} shows the front and Picture {back} the back of the same {words}.")
        else:
            parts.append(f"Picture {numbers[0]} shows the {first.side.value} of a {words}.")
        dressing.append(
            f"Dress the person from Picture 1 in the {first.category.value} from {_pictures(numbers)}, "
            f"{_WEAR[first.category]}."
        )
    parts += dressing
    if pose_hint is PoseHint.BACK:
        backs = [seen[GarmentSide.BACK] for seen in views if GarmentSide.BACK in seen]
        shown = f", as photographed in {_pictures(backs)}" if backs else ""
        parts.append(f"The person is seen from behind, so show the back of the clothes{shown}.")
    elif pose_hint is PoseHint.FRONT:
        fronts = [seen[GarmentSide.FRONT] for seen in views if GarmentSide.FRONT in seen]
        shown = f", as photographed in {_pictures(fronts)}" if fronts else ""
        parts.append(f"The person faces the camera, so show the front of the clothes{shown}.")
    else:
        parts.append("Show the side of each garment that faces the camera in Picture 1.")
    parts.append(
        "Keep the garment's color, pattern, print, logo, fabric and cut exactly. Keep the person's "
        "face, hair, skin, body shape, pose and facing, the other clothes, the background, the "
        "lighting and the framing of Picture 1 unchanged."
    )
    return " ".join(parts)


def is_lightning(lora_path: Path | None, setting: str) -> bool:
    """Whether the LoRA is a Qwen-Image-Lightning one: ``setting`` ``lightning``, or ``auto``
    and "lightning" in the file name (lightx2v's names, e.g.
    ``Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors``)."""
    if setting not in LORA_SCHEDULERS:
        raise BackendUnavailableError(
            f"unknown LoRA scheduler {setting!r}; choose {', '.join(LORA_SCHEDULERS)}"
        )
    if lora_path is None or setting == "base":
        return False
    return setting == "lightning" or "lightning" in lora_path.name.lower()


def lightning_steps(lora_path: Path) -> int:
    """The steps a Lightning LoRA was distilled for, from its name (``...-4steps-...``); 8
    when the name does not say."""
    found = re.search(r"(\d+)[-_ ]?steps?", lora_path.name, re.IGNORECASE)
    return int(found.group(1)) if found else LIGHTNING_DEFAULT_STEPS


def lightning_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(LIGHTNING_SCHEDULER)


class QwenImageEditGenerator(Generator):
    """Qwen-Image-Edit-Plus; see the module docstring."""

    info = QWEN_EDIT_INFO

    def __init__(self, options: hf_layout.GpuOptions) -> None:
        model_dir = hf_layout.require_layout(
            options.model_dir,
            REQUIRED,
            backend=NAME,
            env="VTO_GPU_MODEL_DIR",
            hint="Download Qwen/Qwen-Image-Edit-2509 (or -2511) on a machine with internet and copy it here.",
        )
        if options.lora_path is not None and not options.lora_path.is_file():
            raise BackendUnavailableError(f"LoRA file {options.lora_path} (VTO_GPU_LORA_PATH) does not exist")
        lightning = is_lightning(options.lora_path, options.lora_scheduler)
        torch = hf_layout.import_torch()
        from diffusers import QwenImageEditPlusPipeline

        device = hf_layout.resolve_device(options.device)
        dtype = hf_layout.resolve_dtype(options.dtype, device)
        if dtype == torch.float16:
            picked = (
                " (auto picked it: this GPU has no bfloat16)" if options.dtype in (None, "", "auto") else ""
            )
            raise BackendUnavailableError(
                f"{NAME} does not run in fp16{picked}: Qwen-Image's activations overflow fp16 and "
                "give NaN (black) images. Set VTO_GPU_DTYPE=bf16 on a GPU with bfloat16 (NVIDIA Ampere "
                "or later), or fp32 (about 2x the memory)."
            )
        try:
            pipeline = QwenImageEditPlusPipeline.from_pretrained(
                str(model_dir), **hf_layout.LOCAL_ONLY, **hf_layout.dtype_kwarg(dtype)
            )
        except (OSError, ValueError, KeyError) as error:
            raise BackendUnavailableError(
                f"the {NAME} model directory {model_dir} could not be loaded: {error}"
            ) from error
        if options.lora_path is not None:
            hf_layout.merge_lora(pipeline.transformer, options.lora_path)
        if lightning:
            pipeline.scheduler = lightning_scheduler()
            assert options.lora_path is not None
            options = _lightning_defaults(options, options.lora_path)
        hf_layout.place(pipeline, device, options.offload)
        self._setup(torch, pipeline, options, device)

    @classmethod
    def from_pipeline(
        cls, pipeline: Any, options: hf_layout.GpuOptions | None = None
    ) -> QwenImageEditGenerator:
        """Wrap an already built pipeline (e.g. random weights built on the GPU for a benchmark)."""
        options = options or hf_layout.GpuOptions(model_dir=None)
        torch = hf_layout.import_torch()
        generator = cls.__new__(cls)
        generator._setup(torch, pipeline, options, str(pipeline.device))
        return generator

    def _setup(self, torch: Any, pipeline: Any, options: hf_layout.GpuOptions, device: str) -> None:
        pipeline.set_progress_bar_config(disable=True)
        if options.vae_tiling:
            pipeline.vae.enable_tiling()
        self._torch = torch
        self.pipeline = pipeline
        self.device = device
        self.steps = options.steps if options.steps is not None else DEFAULT_STEPS
        self.guidance = options.guidance if options.guidance is not None else DEFAULT_GUIDANCE
        # the VAE's downscale (8 published) times the 2x2 latent patches
        self.size_multiple = int(pipeline.vae_scale_factor) * 2
        # one pipeline call at a time: the scheduler's step index and sigmas are shared state
        self._lock = threading.Lock()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        (result,) = self.generate_batch([request])
        if isinstance(result, GenerationError):
            raise result
        return result

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult | GenerationError]:
        """One request after another: QwenImageEditPlusPipeline takes a single prompt per call."""
        results: list[GenerationResult | GenerationError] = []
        for request in requests:
            try:
                results.append(self._run(request))
            except GenerationError as error:
                results.append(error)
        return results

    def _run(self, request: GenerationRequest) -> GenerationResult:
        self.validate(request)
        options = request.options
        start = time.perf_counter()
        width, height = (
            round_to(options.width, self.size_multiple),
            round_to(options.height, self.size_multiple),
        )
        person = cover(decode(request.model_photo, what="model photo"), width, height)
        garments = [decode(garment.data, what="garment image") for garment in request.garments]
        prompt = build_prompt(request.garments, request.pose_hint)
        prepared = time.perf_counter()
        images = []
        try:
            for index in range(options.num_outputs):
                generator = self._torch.Generator("cpu").manual_seed(options.seed * 1000 + index)
                with self._lock:
                    if self.pipeline is None:
                        raise ResourceError(f"{NAME}: the generator is closed")
                    output = self.pipeline(
                        image=[person, *garments],
                        prompt=prompt,
                        negative_prompt=NEGATIVE_PROMPT if self.guidance > 1 else None,
                        true_cfg_scale=self.guidance,
                        width=width,
                        height=height,
                        num_inference_steps=self.steps,
                        generator=generator,
                        output_type="pil",
                    )
                images.append(output.images[0])
        except (RuntimeError, MemoryError) as error:
            if hf_layout.is_out_of_memory(error):
                if self._torch.cuda.is_available():
                    self._torch.cuda.empty_cache()
                raise ResourceError(f"{NAME}: out of device memory") from error
            raise
        done = time.perf_counter()
        return image_result(
            request,
            images,
            NAME,
            {"prepare": (prepared - start) * 1000, "diffusion": (done - prepared) * 1000},
        )

    def close(self) -> None:
        with self._lock:
            self.pipeline = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()


def _lightning_defaults(options: hf_layout.GpuOptions, lora_path: Path) -> hf_layout.GpuOptions:
    """A Lightning LoRA's steps and guidance where the settings leave them unset."""
    import dataclasses

    return dataclasses.replace(
        options,
        steps=options.steps if options.steps is not None else lightning_steps(lora_path),
        guidance=options.guidance if options.guidance is not None else LIGHTNING_GUIDANCE,
    )
