"""Pure-PyTorch core of the Lumina-Video pack (never imports ComfyUI).

Modules, one concept each: ``model`` (Multi-scale Next-DiT), ``rope``, ``schedule`` (time-aware
values and stages), ``sampling`` (Euler ODE with multi-CFG and motion guidance), ``checkpoint``
(loading official and single-file weights), ``text`` (Gemma-2 prompt features), ``vae``
(CogVideoX latents <-> frames), ``sizes`` (the video size rule and official resolutions), ``motion``
(optical-flow motion score), ``video_io``, ``cost`` (this machine's seconds per model call), ``budget``
(schedules fitted to a time budget), ``draft`` (a cheap look at the clip when the coarse stage ends), ``limits``
(the bounds on what a user gives: widget ranges, JSON size, depth and finite numbers),
``ray_ranks`` (the sampler on Ray actors, one process-group rank each; its workers run ``ray_worker``) and ``cli``.
"""

__version__ = "0.1.0"
