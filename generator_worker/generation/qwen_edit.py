"""The ``qwen-image-edit`` backend: Qwen-Image-Edit-Plus (2509 or 2511, Apache-2.0) through
``diffusers.QwenImageEditPlusPipeline``, loaded from a local directory in the published layout
(``local_files_only=True``, ``HF_HUB_OFFLINE=1``; nothing is downloaded).

The person photo is Picture 1, the garment photos Picture 2 (and 3); a prompt written from each
garment's category (top, bottom, dress, outer) and side (front, back) asks the model to dress the
person in them and keep everything else. An optional few-step LoRA (e.g. Qwen-Image-Lightning,
8 steps with guidance 1) is fused into the transformer at start. Images only.

Required layout (``VTO_GPU_MODEL_DIR``), as ``huggingface-cli download Qwen/Qwen-Image-Edit-2509``
writes it: ``model_index.json``; ``transformer/`` and ``vae/`` (``config.json`` and
``diffusion_pytorch_model.safetensors`` or its sharded index); ``text_encoder/`` (``config.json``
and ``model.safetensors`` or its sharded index); ``tokenizer/`` and ``processor/`` (tokenizer and
processor configs); ``scheduler/scheduler_config.json``.

Imports only torch, diffusers, transformers, PIL and numpy (lazily, when built), plus
``generator_worker.generation.base`` and its PIL-only helpers.
"""

from __future__ import annotations

import time
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


def build_prompt(garments: tuple[GarmentImage, ...], pose_hint: PoseHint = PoseHint.AUTO) -> str:
    """The edit instruction: Picture 1 is the person, Picture ``n + 2`` the ``n``-th garment."""
    parts = ["Picture 1 shows a person."]
    for index, garment in enumerate(garments, start=2):
        side = "back" if garment.side is GarmentSide.BACK else "front"
        parts.append(f"Picture {index} shows the {side} of a {_GARMENT_WORDS[garment.category]}.")
    for index, garment in enumerate(garments, start=2):
        parts.append(
            f"Dress the person from Picture 1 in the {garment.category.value} from Picture {index}, "
            f"{_WEAR[garment.category]}."
        )
    backs = any(garment.side is GarmentSide.BACK for garment in garments)
    if pose_hint is PoseHint.BACK or (backs and pose_hint is PoseHint.AUTO):
        parts.append("The person is seen from behind, so show the back of the garment as photographed.")
    elif pose_hint is PoseHint.FRONT:
        parts.append("The person faces the camera.")
    parts.append(
        "Keep the garment's color, pattern, print, logo, fabric and cut exactly. Keep the person's "
        "face, hair, skin, body shape and pose, the other clothes, the background, the lighting and "
        "the framing of Picture 1 unchanged."
    )
    return " ".join(parts)


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
        torch = hf_layout.import_torch()
        from diffusers import QwenImageEditPlusPipeline

        device = hf_layout.resolve_device(options.device)
        dtype = hf_layout.resolve_dtype(options.dtype, device)
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
        self._setup(torch, pipeline.to(device), options, device)

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
        self._torch = torch
        self.pipeline = pipeline
        self.device = device
        self.steps = options.steps if options.steps is not None else DEFAULT_STEPS
        self.guidance = options.guidance if options.guidance is not None else DEFAULT_GUIDANCE
        # the VAE's downscale (8 published) times the 2x2 latent patches
        self.size_multiple = int(pipeline.vae_scale_factor) * 2

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
        self.pipeline = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()
