"""Video jobs on a GPU: the try-on image of an image backend, animated by Wan 2.x
image-to-video (Apache-2.0) through ``diffusers.WanImageToVideoPipeline``.

``WanVideoGenerator(model_dir: Path, image_generator: Generator, *, device=None, dtype=None,
steps=None, guidance=None, max_frames=DEFAULT_MAX_FRAMES, prompt=DEFAULT_PROMPT,
negative_prompt=DEFAULT_NEGATIVE_PROMPT)``

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
  images with it, animates each into a clip of ``seconds_per_output`` at ``fps`` (the frame
  count rounded to Wan's ``4k+1``, at most ``max_frames``), and encodes the clips one after
  the other as one H.264 MP4 (PyAV, as the lookbook clip is encoded).
* ``device``/``dtype``: ``None``/``"auto"`` picks CUDA in bf16 when present, else CPU fp32.
* ``steps``/``guidance``: denoising steps and classifier-free guidance scale (defaults
  :data:`DEFAULT_STEPS`, :data:`DEFAULT_GUIDANCE`).

The frame size is the job's: the model runs at the size rounded down to its spatial multiple
(16 or 32 pixels) and the frames are resized to the requested size. GPU out-of-memory becomes
a retryable ``ResourceError`` (its ``__cause__`` is the original error). One pipeline call at
a time per generator (a lock): worker threads share one loaded model.

Imports torch, diffusers and PIL lazily (the rest of the application never imports torch).
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
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


def _transformers_without_accelerate(root: Path, torch: Any, dtype: Any) -> dict[str, Any]:
    """Without ``accelerate``, diffusers refuses to load a model that keeps modules in fp32
    (``WanTransformer3DModel`` does): build the transformer(s) from their config and load
    their safetensors here, keeping those modules in fp32 as diffusers would. With
    ``accelerate`` installed (the GPU image), nothing: ``from_pretrained`` loads them."""
    import importlib.util

    if importlib.util.find_spec("accelerate") is not None:
        return {}
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file

    loaded: dict[str, Any] = {}
    for name in ("transformer", "transformer_2"):
        folder = root / name
        if not (folder / "config.json").is_file():
            continue
        model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(str(folder)))
        single = folder / "diffusion_pytorch_model.safetensors"
        if single.is_file():
            files = [single]
        else:
            index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
            files = [folder / shard for shard in sorted(set(index["weight_map"].values()))]
        state: dict[str, Any] = {}
        for file in files:
            state.update(load_file(str(file)))
        model.load_state_dict(state, strict=True)
        model.to(dtype)
        keep = tuple(WanTransformer3DModel._keep_in_fp32_modules or ())
        for module_name, module in model.named_modules():
            if any(part in keep for part in module_name.split(".")):
                module.to(torch.float32)
        loaded[name] = model.eval()
    return loaded


def clip_frames(fps: int, seconds: float, max_frames: int = DEFAULT_MAX_FRAMES) -> int:
    """Frames of one animated output: ``fps * seconds`` rounded to Wan's ``4k + 1`` (at least
    5, at most ``max_frames`` rounded down the same way)."""
    cap = max(5, (max_frames - 1) // 4 * 4 + 1)
    wanted = max(1, round(fps * seconds))
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
        max_frames: int = DEFAULT_MAX_FRAMES,
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    ) -> None:
        root = Path(model_dir)
        hf_layout.require_layout(root, required_files(root), backend="wan", env=ENV)
        torch = hf_layout.import_torch()
        from diffusers import WanImageToVideoPipeline

        self.image_generator = image_generator
        self.device = hf_layout.resolve_device(device)
        self.dtype = hf_layout.resolve_dtype(dtype, self.device)
        self.steps = DEFAULT_STEPS if steps is None else steps
        self.guidance = DEFAULT_GUIDANCE if guidance is None else guidance
        if self.steps < 1:
            raise BackendUnavailableError("the wan generator needs at least 1 denoising step")
        self.max_frames = max_frames
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        try:
            preloaded = _transformers_without_accelerate(root, torch, self.dtype)
            pipeline = WanImageToVideoPipeline.from_pretrained(
                str(root), **hf_layout.dtype_kwarg(self.dtype), **preloaded, **hf_layout.LOCAL_ONLY
            )
        except (OSError, ValueError, KeyError) as error:
            raise BackendUnavailableError(
                f"the wan model directory {root} ({ENV}) does not load: {error}"
            ) from error
        pipeline.to(self.device)
        pipeline.set_progress_bar_config(disable=True)
        # The prompts never change: encode them once, then free the text encoder (UMT5-XXL is
        # 11 GB in bf16). Encoded here, not by the pipeline, whose cleaning needs ftfy.
        self._prompt_embeds, self._negative_embeds = encode_prompts(
            pipeline, [prompt, negative_prompt], self.device
        )
        pipeline.text_encoder = None
        self._pipeline = pipeline
        self._torch = torch
        self._lock = threading.Lock()
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
            notes=f"{inner.notes} Videos: the try-on images animated by Wan 2.x image-to-video "
            f"({root.name}, {self.steps} steps).".strip(),
        )

    def close(self) -> None:
        with self._lock:
            self._pipeline = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
        self.image_generator.close()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        if request.kind is not JobKind.VIDEO:
            return self.image_generator.generate(request)
        self.validate(request)
        start = time.perf_counter()
        options = request.options
        stills = dataclasses.replace(
            request,
            kind=JobKind.IMAGE,
            options=dataclasses.replace(options, image_format=ImageFormat.PNG),
        )
        images = self.image_generator.generate(stills)
        timings = {f"image.{name}": ms for name, ms in images.timings_ms.items()}
        per_output = clip_frames(options.fps, options.seconds_per_output, self.max_frames)
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
            (frame for clip in clips for frame in clip), options.width, options.height, options.fps
        )
        timings["encode"] = (time.perf_counter() - encode_start) * 1000
        timings["total"] = (time.perf_counter() - start) * 1000
        output = GeneratedOutput(data, "video/mp4", options.width, options.height, frames)
        return GenerationResult(outputs=(output,), backend=self.info.name, timings_ms=timings)

    def _animate(self, png: bytes, width: int, height: int, frames: int, seed: int, index: int) -> Any:
        """One try-on image animated: ``frames`` RGB uint8 arrays of ``width`` x ``height``."""
        import numpy as np
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(png)).convert("RGB")
        except (OSError, ValueError) as error:
            raise InvalidInputError("the image generator's output is not an image") from error
        run_w = max(self.multiple, width // self.multiple * self.multiple)
        run_h = max(self.multiple, height // self.multiple * self.multiple)
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
