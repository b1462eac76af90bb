"""Fit the demo VAE's latent-to-RGB preview map (``lumina_core.preview.DEMO``) by least squares and print it.

Procedural clips (``training/demo_data.py``, seeds 0 .. clips-1) are encoded with the demo VAE and decoded
again; the map regresses the decoded RGB (in [-1, 1], averaged over the frames and the 8 x 8 pixels of each
latent pixel) on the 16 latent channels plus a constant. tests/test_preview.py refits it and checks the
stored table against the result.

    python -m training.fit_preview [--clips 24]
"""

from __future__ import annotations

import argparse

import torch

from lumina_core import demo
from lumina_core.preview import LatentRGB, fit_latent_rgb
from lumina_core.vae import decode, encode
from training.demo_data import make_clip

FIT_CLIPS = 24


def demo_latents_and_frames(clips: int = FIT_CLIPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(model-space latents [clips, 16, T, h, w], decoded frames [clips, F, H, W, 3]) of the first ``clips``
    procedural clips through the demo VAE."""
    vae = demo.build_vae()
    frames = torch.stack([torch.from_numpy(make_clip(seed)[0]) for seed in range(clips)]).float() / 255
    latents = encode(vae, frames)
    return latents, decode(vae, latents)


def fit_demo(clips: int = FIT_CLIPS) -> tuple[LatentRGB, float]:
    """The demo VAE's least-squares map over ``clips`` clips and its RMS error (RGB in [-1, 1])."""
    return fit_latent_rgb(*demo_latents_and_frames(clips))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=FIT_CLIPS, help="procedural clips to fit on")
    args = parser.parse_args()
    fitted, error = fit_demo(args.clips)
    print(f"# least squares over {args.clips} clips, RMS error {error:.4f} (RGB in [-1, 1])")
    print("factors=(")
    for row in fitted.factors:
        print("    (" + ", ".join(f"{value:.4f}" for value in row) + "),")
    print("),")
    print("bias=(" + ", ".join(f"{value:.4f}" for value in fitted.bias) + "),")


if __name__ == "__main__":
    main()
