"""Pure-PyTorch core of the Lumina-Video pack (never imports ComfyUI).

The library, one concept a module: ``model`` (Multi-scale Next-DiT), ``rope``, ``schedule`` (time grid,
time-aware values and stages), ``sampling`` (Euler ODE with multi-CFG and motion guidance), ``step_cache``
(skipped model calls), ``checkpoint`` (official and single-file weights), ``precision`` (dtypes), ``text``
(Gemma-2 prompt features), ``vae`` (CogVideoX latents <-> frames), ``sizes`` (the video size rule and official
resolutions), ``motion`` (optical-flow motion score), ``video_io``, ``cost`` (this machine's seconds per model
call), ``budget`` (schedules fitted to a time budget), ``draft`` (a cheap look at the clip when the coarse stage ends),
``limits`` (the bounds on what a user gives: widget ranges, JSON size, depth and finite numbers),
``preview`` (latent-to-RGB maps for previews of every latent frame), ``lora`` (LoRA layers, files and merging),
``flow_matching`` (the training recipe: batches, time shift, loss, one step) and ``finetune_data`` (a folder of
captioned clips and stills cached as latents, caption features and motion scores).

Beside it, each in its own subpackage: ``app`` (the command line, ``python -m lumina_core``), ``parallel`` (one
generation across processes: torchrun and Ray) and ``demo`` (the small trained demo models and their files). The
demo training lives outside the package, in the repository's ``training/``. What may import what:
docs/architecture.md.
"""

__version__ = "0.1.0"
