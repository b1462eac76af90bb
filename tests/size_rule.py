"""One table of video sizes for the one size rule (lumina_core.sizes.check_video_size), checked against the
command line (test_cli.py) and the nodes (test_nodes.py): both must accept and refuse the same rows."""

from lumina_core.app import cli

# (width, height, frames, schedule, None = accepted, else a part of the error message both give)
SIZE_TABLE = [
    (1248, 704, 96, "f24F96R960-MultiScale", None),
    (1248, 704, 1, "f24F96R960-MultiScale", None),
    (1248, 704, 49, "f24F96R960-MultiScale", "frames 49 make 13 latent frames, which the schedule's 2x4 stage "
                                             "cannot split into groups of 2; use 48 or 56 frames"),
    (1248, 704, 49, "f24F96R960", None),
    (1232, 704, 96, "f24F96R960", None),
    (1232, 704, 96, "f24F96R960-MultiScale", "width 1232 is not a positive multiple of 32 pixels (the VAE's 8 x "
                                             "patch 4 of the schedule's 2x4 stage); use 1216 or 1248"),
    (1240, 704, 96, "f24F96R960", "width 1240 is not a positive multiple of 16 pixels (the VAE's 8 x patch 2 of "
                                  "the schedule's 1x2 stage); use 1232 or 1248"),
    (672, 384, 64, "f16F64R512-MultiScale", None),
    (672, 376, 64, "f16F64R512-MultiScale", "height 376 is not a positive multiple of 32 pixels"),
    (64, 64, 16, "demo", None),
    (64, 64, 17, "demo", "frames 17 make 5 latent frames, which the schedule's 2x2 stage cannot split into groups "
                         "of 2; use 16 or 24 frames"),
    (64, 64, 50, "demo", "frame count 50 is not valid for the CogVideoX VAE: it must be 8m or 8m+1"),
    (70, 64, 16, "demo", "width 70 is not a positive multiple of"),  # of 8 for Empty Latent Video, 16 for the demo
    (9000, 704, 96, "f24F96R960", "width 9000 is above 8192 pixels; use at most 8192"),
]


def cli_verdict(width: int, height: int, frames: int, schedule: str):
    """None when ``python -m lumina_core generate`` accepts the size (checked before any model loads), else
    its error message."""
    argv = ["generate", "--prompt", "x", "--out", "video.mp4", "--width", str(width), "--height", str(height),
            "--frames", str(frames)]
    if schedule != "demo":  # the command line's default schedule is the demo's
        argv += ["--schedule", schedule]
    try:
        cli.resolve_settings(cli.build_parser().parse_args(argv))
    except ValueError as error:
        return str(error)
    return None
