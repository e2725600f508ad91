"""Random-weight models in the published layouts, for tests and benchmarks only.

Nothing here is imported by the application's packages (``generator_worker`` loads published
files; these modules write and build stand-ins for them): ``catvton`` (SD 1.5 inpainting UNet,
VAE, scheduler and CatVTON's attention file in upstream's numbering), ``qwen``
(Qwen-Image-Edit-Plus) and ``wan`` (Wan 2.x image-to-video). ``tests/`` and
``benchmarks/gpu_bench.py`` (so ``scripts/gpu_check.sh``) import them; each imports torch,
diffusers, transformers, tokenizers and safetensors lazily, inside its functions.
"""
