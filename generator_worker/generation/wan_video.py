"""Video jobs on a GPU: the try-on image of an image backend, animated by Wan 2.x
image-to-video (Apache-2.0) through ``diffusers.WanImageToVideoPipeline``.

``WanVideoGenerator(model_dir: Path, image_generator: Generator, *, device=None, dtype=None,
steps=None, guidance=None, max_frames=None, max_area=None, offload="none", vae_tiling=False,
prompt=DEFAULT_PROMPT, negative_prompt=DEFAULT_NEGATIVE_PROMPT)``

* ``model_dir``: a local directory in the published ``Wan-AI/Wan2.x-...-Diffusers`` layout,
  read with ``local_files_only=True`` (``HF_HUB_OFFLINE=1``; nothing is downloaded). Which
  files are required is read from its ``model_index.json``: ``transformer/``, ``vae/``,
  ``text_encoder/`` (UMT5), ``tokenizer/``, ``scheduler/`` always; ``transformer_2/`` when
  listed (Wan2.2-I2V-A14B); ``image_encoder/`` and ``image_processor/`` when listed or when the
  transformer takes image embeddings (Wan2.1-I2V). Wan2.2-TI2V-5B (published as a
  ``WanPipeline`` with ``expand_timesteps``) loads too. A missing or incomplete directory is
  refused at construction (``BackendUnavailableError`` listing the missing files).
* ``image_generator``: the backend that makes the try-on images (a GPU image backend or the
  offline one). Image jobs go to it unchanged; a video job renders its ``num_outputs`` try-on
  images with it, animates each into a clip, and encodes the clips one after the other as one
  H.264 MP4 (PyAV, as the lookbook clip is encoded).
* ``device``/``dtype``: ``None``/``"auto"`` picks CUDA in bf16 when present, else CPU fp32. The
  VAE and the CLIP image encoder are loaded in fp32 whatever ``dtype`` is, as diffusers'
  published Wan I2V example does (the transformers and the text encoder take ``dtype``).
* ``steps``/``guidance``: denoising steps and classifier-free guidance scale (defaults
  :data:`DEFAULT_STEPS`, :data:`DEFAULT_GUIDANCE`).
* ``offload``: ``none``, ``model`` or ``sequential`` (diffusers' CPU offload, see
  ``hf_layout.place``); ``vae_tiling``: decode the video in tiles.

The model's family (:func:`wan_family`, from its ``model_index.json`` and transformer config)
gives the defaults upstream generates with: the frame rate and the frames per clip
(Wan2.1 I2V and Wan2.2-I2V-A14B: 16 fps, 81 frames; Wan2.2-TI2V-5B: 24 fps, 121 frames; the
Wan-Video repositories' ``wan/configs``: ``sample_fps``, ``frame_num``) and the area it runs at
(480x832 pixels for the 480P models and A14B, 720x1280 for Wan2.1 720P, 704x1280 for TI2V-5B:
upstream's ``MAX_AREA_CONFIGS``/``SUPPORTED_SIZES``). A job's ``fps`` and
``seconds_per_output``, when it sets them, replace the rate and the clip length (frames rounded
to Wan's ``4k+1``, at most ``max_frames``: the model's own frame count unless given). The clip
is generated at the job's aspect within ``max_area`` pixels, each side a multiple of the
model's spatial step (diffusers' Wan I2V example's computation), then resized to the job's size.

GPU out-of-memory becomes a retryable ``ResourceError`` (its ``__cause__`` is the original
error). One Wan pipeline call at a time per generator, and one call of the image generator at
a time (two locks): worker threads share the loaded models.

Imports torch, diffusers and PIL lazily (the rest of the application never imports torch).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator_worker.generation import hf_layout
from generator_worker.generation.base import (
    BackendUnavailableError,
    GeneratedOutput,
    GenerationRequest,
    GenerationResult,
    Generator,
    ImageFormat,
    InvalidInputError,
    JobKind,
    ResourceError,
)

DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 5.0
DEFAULT_MAX_FRAMES = 121
MAX_TEXT_TOKENS = 512  # the Wan pipelines' max_sequence_length
DEFAULT_PROMPT = (
    "a fashion model wearing the outfit turns slowly in place, smooth camera motion, studio lighting, "
    "high quality lookbook video"
)
DEFAULT_NEGATIVE_PROMPT = "blurry, distorted, static, low quality, deformed body, extra limbs"
ENV = "VTO_VIDEO_MODEL_DIR"
WAN_LICENSE = "Apache-2.0 (Wan 2.x)"
# Components of model_index.json and the files each needs (the weights' stem per library).
_MODELS = {"transformer": "diffusion_pytorch_model", "transformer_2": "diffusion_pytorch_model"}
_MODELS |= {"vae": "diffusion_pytorch_model", "text_encoder": "model", "image_encoder": "model"}
_ALWAYS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")


def required_files(model_dir: Path | str) -> list[hf_layout.Need]:
    """The files a Wan I2V directory needs, decided from its ``model_index.json`` (when it
    is readable; else the files every published Wan I2V layout has)."""
    root = Path(model_dir)
    index: dict[str, Any] = {}
    try:
        loaded = json.loads((root / "model_index.json").read_text())
        index = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    listed = {
        name for name, value in index.items() if isinstance(value, list) and value and value[0] is not None
    }
    components = set(_ALWAYS) | (listed & {"transformer_2", "image_encoder", "image_processor"})
    if _transformer_takes_images(root):
        components |= {"image_encoder", "image_processor"}
    need: list[hf_layout.Need] = ["model_index.json"]
    for name in sorted(components):
        if name == "scheduler":
            need.append("scheduler/scheduler_config.json")
        elif name == "tokenizer":
            need += [
                "tokenizer/tokenizer_config.json",
                ("tokenizer/tokenizer.json", "tokenizer/spiece.model"),
            ]
        elif name == "image_processor":
            need.append("image_processor/preprocessor_config.json")
        else:
            need += [f"{name}/config.json", hf_layout.weights(name, _MODELS[name])]
    return need


def _transformer_takes_images(root: Path) -> bool:
    try:
        config = json.loads((root / "transformer" / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("image_dim") is not None


def encode_prompts(pipeline: Any, texts: list[str], device: str, max_length: int = MAX_TEXT_TOKENS) -> Any:
    """The UMT5 embeddings of ``texts`` as the Wan pipelines use them (padded to
    ``max_length`` with zeros past each text's tokens), one ``(1, max_length, dim)`` tensor
    per text, in the transformer's dtype."""
    import torch

    tokens = pipeline.tokenizer(
        texts,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    mask = tokens.attention_mask
    lengths = mask.gt(0).sum(dim=1)
    encoder = pipeline.text_encoder
    with torch.no_grad():
        hidden = encoder(tokens.input_ids.to(device), mask.to(device)).last_hidden_state
    dtype = pipeline.transformer.dtype
    return [
        torch.cat([row[:length], row.new_zeros(max_length - int(length), row.size(1))])[None].to(dtype)
        for row, length in zip(hidden, lengths, strict=True)
    ]


@dataclass(frozen=True)
class WanFamily:
    """What upstream generates a published Wan I2V model with (see the module docstring)."""

    name: str
    fps: int
    frames: int
    max_area: int


# Wan-Video/Wan2.1 and Wan2.2, wan/configs: shared_config.py (sample_fps 16, frame_num 81),
# wan_ti2v_5B.py (sample_fps 24, frame_num 121); wan/configs/__init__.py SUPPORTED_SIZES
# (ti2v-5B: 704*1280; i2v-A14B and Wan2.1 i2v-14B: 480*832 or 720*1280)
WAN22_TI2V_5B = WanFamily("Wan2.2-TI2V-5B", 24, 121, 704 * 1280)
WAN22_I2V_A14B = WanFamily("Wan2.2-I2V-A14B", 16, 81, 480 * 832)
WAN21_I2V_480P = WanFamily("Wan2.1-I2V-14B-480P", 16, 81, 480 * 832)
WAN21_I2V_720P = WanFamily("Wan2.1-I2V-14B-720P", 16, 81, 720 * 1280)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def wan_family(model_dir: Path | str) -> WanFamily:
    """The published model a directory holds: two transformers (``transformer_2`` listed or a
    ``boundary_ratio``) is Wan2.2-I2V-A14B; ``expand_timesteps`` or a 48-channel transformer
    (the Wan 2.2 VAE) is Wan2.2-TI2V-5B; otherwise Wan 2.1 I2V, 720P when the directory's name
    says so (its configs are those of the 480P model), else 480P."""
    root = Path(model_dir)
    index = _read_json(root / "model_index.json")
    second = index.get("transformer_2")
    two = isinstance(second, list) and bool(second) and second[0] is not None
    transformer = _read_json(root / "transformer" / "config.json")
    return _family(two, index, transformer, root.name)


def wan_family_of(pipeline: Any) -> WanFamily:
    """:func:`wan_family` of a pipeline in memory."""
    two = getattr(pipeline, "transformer_2", None) is not None
    return _family(two, dict(pipeline.config), dict(pipeline.transformer.config), "")


def _family(two: bool, index: dict[str, Any], transformer: dict[str, Any], name: str) -> WanFamily:
    if two or index.get("boundary_ratio"):
        return WAN22_I2V_A14B
    if index.get("expand_timesteps") or transformer.get("in_channels") == 48:
        return WAN22_TI2V_5B
    return WAN21_I2V_720P if "720p" in name.lower() else WAN21_I2V_480P


def run_size(width: int, height: int, max_area: int, multiple: int) -> tuple[int, int]:
    """The size a clip is generated at: the job's aspect within ``max_area`` pixels, each side
    rounded down to ``multiple`` (diffusers' Wan I2V example: ``round(sqrt(max_area * aspect))
    // mod_value * mod_value``)."""
    aspect = height / width
    run_h = round(math.sqrt(max_area * aspect)) // multiple * multiple
    run_w = round(math.sqrt(max_area / aspect)) // multiple * multiple
    return max(multiple, run_w), max(multiple, run_h)


def clip_frames(
    fps: int, seconds: float | None, max_frames: int = DEFAULT_MAX_FRAMES, model_frames: int = 81
) -> int:
    """Frames of one animated output: ``model_frames`` when ``seconds`` is None, else ``fps *
    seconds``; rounded to Wan's ``4k + 1`` (at least 5, at most ``max_frames`` rounded down the
    same way)."""
    cap = max(5, (max_frames - 1) // 4 * 4 + 1)
    wanted = model_frames if seconds is None else max(1, round(fps * seconds))
    return min(cap, max(5, round((wanted - 1) / 4) * 4 + 1))


class WanVideoGenerator(Generator):
    """Try-on videos: ``image_generator``'s try-on images animated by Wan 2.x I2V (see the
    module docstring for the arguments)."""

    def __init__(
        self,
        model_dir: Path | str,
        image_generator: Generator,
        *,
        device: str | None = None,
        dtype: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        max_frames: int | None = None,
        max_area: int | None = None,
        offload: str = "none",
        vae_tiling: bool = False,
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    ) -> None:
        root = Path(model_dir)
        hf_layout.require_layout(root, required_files(root), backend="wan", env=ENV)
        if offload not in hf_layout.OFFLOADS:
            raise BackendUnavailableError(
                f"unknown offload {offload!r}; choose {', '.join(hf_layout.OFFLOADS)}"
            )
        torch = hf_layout.import_torch()
        from diffusers import AutoencoderKLWan, WanImageToVideoPipeline

        self._torch = torch
        self.image_generator = image_generator
        self.device = hf_layout.resolve_device(device)
        self.dtype = hf_layout.resolve_dtype(dtype, self.device)
        self.steps = DEFAULT_STEPS if steps is None else steps
        self.guidance = DEFAULT_GUIDANCE if guidance is None else guidance
        if self.steps < 1:
            raise BackendUnavailableError("the wan generator needs at least 1 denoising step")
        self.family = wan_family(root)
        self.fps = self.family.fps
        self.frames = self.family.frames
        self.max_frames = self.family.frames if max_frames is None else max_frames
        self.max_area = self.family.max_area if max_area is None else max_area
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        # diffusers' Wan I2V example loads the VAE and the image encoder in fp32, the rest in bf16
        full = hf_layout.dtype_kwarg(torch.float32)
        try:
            parts: dict[str, Any] = {
                "vae": AutoencoderKLWan.from_pretrained(str(root / "vae"), **full, **hf_layout.LOCAL_ONLY)
            }
            if (root / "image_encoder" / "config.json").is_file():
                from transformers import CLIPVisionModel

                parts["image_encoder"] = CLIPVisionModel.from_pretrained(
                    str(root / "image_encoder"), dtype=torch.float32, local_files_only=True
                )
            pipeline = WanImageToVideoPipeline.from_pretrained(
                str(root), **hf_layout.dtype_kwarg(self.dtype), **parts, **hf_layout.LOCAL_ONLY
            )
        except (OSError, ValueError, KeyError) as error:
            raise BackendUnavailableError(
                f"the wan model directory {root} ({ENV}) does not load: {error}"
            ) from error
        pipeline.set_progress_bar_config(disable=True)
        # The prompts never change: encode them once, then free the text encoder (UMT5-XXL is
        # 11 GB in bf16), before the pipeline is placed. Encoded here, not by the pipeline,
        # whose cleaning needs ftfy.
        pipeline.text_encoder.to(self.device)
        self._prompt_embeds, self._negative_embeds = encode_prompts(
            pipeline, [prompt, negative_prompt], self.device
        )
        pipeline.text_encoder = None
        self._release_cache()
        hf_layout.place(pipeline, self.device, offload)
        if vae_tiling:
            pipeline.vae.enable_tiling()
        self._pipeline = pipeline
        self._lock = threading.Lock()  # one Wan pipeline call at a time
        self._image_lock = threading.Lock()  # one image generator call at a time
        spatial = int(pipeline.vae_scale_factor_spatial)
        patch = pipeline.transformer.config.patch_size
        self.multiple = spatial * int(patch[1])
        inner = image_generator.info
        self.info = dataclasses.replace(
            inner,
            name=f"{inner.name}+wan",
            license=f"{inner.license}; {WAN_LICENSE}",
            job_kinds=inner.job_kinds | {JobKind.VIDEO},
            min_size=(max(inner.min_size[0], self.multiple), max(inner.min_size[1], self.multiple)),
            requires_weights=True,
            notes=f"{inner.notes} Videos: the try-on images animated by {self.family.name} image-to-video "
            f"({root.name}, {self.steps} steps, {self.fps} fps, {self.frames} frames a clip).".strip(),
        )

    def close(self) -> None:
        with self._lock:
            self._pipeline = None
        self._release_cache()
        with self._image_lock:
            self.image_generator.close()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        if request.kind is not JobKind.VIDEO:
            with self._image_lock:
                return self.image_generator.generate(request)
        self.validate(request)
        start = time.perf_counter()
        options = request.options
        stills = dataclasses.replace(
            request,
            kind=JobKind.IMAGE,
            options=dataclasses.replace(options, image_format=ImageFormat.PNG),
        )
        with self._image_lock:
            images = self.image_generator.generate(stills)
        timings = {f"image.{name}": ms for name, ms in images.timings_ms.items()}
        fps = options.fps if options.fps is not None else self.fps
        per_output = clip_frames(fps, options.seconds_per_output, self.max_frames, self.frames)
        clips = []
        animate_start = time.perf_counter()
        for index, output in enumerate(images.outputs):
            clips.append(
                self._animate(output.data, options.width, options.height, per_output, options.seed, index)
            )
        timings["animate"] = (time.perf_counter() - animate_start) * 1000
        encode_start = time.perf_counter()
        from generator_worker.generation.video import encode_mp4

        data, frames = encode_mp4(
            (frame for clip in clips for frame in clip), options.width, options.height, fps
        )
        timings["encode"] = (time.perf_counter() - encode_start) * 1000
        timings["total"] = (time.perf_counter() - start) * 1000
        output = GeneratedOutput(data, "video/mp4", options.width, options.height, frames, fps=fps)
        return GenerationResult(outputs=(output,), backend=self.info.name, timings_ms=timings)

    def _animate(self, png: bytes, width: int, height: int, frames: int, seed: int, index: int) -> Any:
        """One try-on image animated: ``frames`` RGB uint8 arrays of ``width`` x ``height``,
        generated at :func:`run_size` and resized."""
        import numpy as np
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(png)).convert("RGB")
        except (OSError, ValueError) as error:
            raise InvalidInputError("the image generator's output is not an image") from error
        run_w, run_h = run_size(width, height, self.max_area, self.multiple)
        generator = self._torch.Generator(device="cpu").manual_seed(seed * 1009 + index)
        try:
            with self._lock:
                if self._pipeline is None:
                    raise BackendUnavailableError("the wan generator is closed")
                result = self._pipeline(
                    image=image.resize((run_w, run_h), Image.Resampling.LANCZOS),
                    prompt_embeds=self._prompt_embeds,
                    negative_prompt_embeds=self._negative_embeds,
                    height=run_h,
                    width=run_w,
                    num_frames=frames,
                    num_inference_steps=self.steps,
                    guidance_scale=self.guidance,
                    generator=generator,
                    output_type="np",
                )
        except Exception as error:
            if hf_layout.is_out_of_memory(error):
                self._release_cache()
                raise ResourceError("out of GPU memory while animating the video") from error
            raise
        video = np.asarray(result.frames[0])  # (frames, height, width, 3) floats in 0..1
        video = (np.nan_to_num(video, nan=0.5).clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if (run_w, run_h) == (width, height):
            return list(video)
        return [
            np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))
            for frame in video
        ]

    def _release_cache(self) -> None:
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
