"""Procedural training data of the demo model: one coloured shape moving over a plain grey background.

Every sample is drawn from a seeded generator, so ``make_clip(seed)`` is a pure function of its
seed. A clip is ``DEMO_SIZE`` (64 x 64 px, 16 frames at 8 fps): one circle, square or triangle of
one of six colours, moving left/right/up/down at a slow, normal or fast speed, or standing still.
Stills (one frame) show the same shapes without motion. Captions use only words the demo
tokenizer knows, e.g. "a red circle moving left quickly" or "a blue square standing still".

As the paper labels real videos with optical flow, every clip's motion label is *measured* with
:func:`lumina_core.motion.motion_score` (not derived from the speed we drew), so the number a user
types means the same as for real clips: mean flow magnitude per 0.5 s at 320 x 576.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from lumina_core.motion import motion_score

WIDTH = HEIGHT = 64
FRAMES = 16
FPS = 8

# Six well-separated hues (RGB in [0, 1]); the evaluation classifies generated colours by hue.
COLOURS = {
    "red": (0.90, 0.12, 0.10),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.15, 0.75, 0.15),
    "cyan": (0.10, 0.80, 0.85),
    "blue": (0.12, 0.25, 0.90),
    "magenta": (0.85, 0.15, 0.80),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# Speed bands in pixels per frame (at 64 px); the caption word of each band ("" = no adverb).
SPEEDS = {"slowly": (0.6, 1.1), "": (1.4, 2.0), "quickly": (2.3, 3.0)}
STILL = "still"
SIZE_RANGE = (9.0, 12.0)  # shape "radius" in pixels


@dataclass(frozen=True)
class ClipSpec:
    """What one sample shows (everything the caption can say, plus the drawn details)."""

    colour: str
    shape: str
    direction: str  # one of DIRECTIONS or STILL
    speed_word: str  # key of SPEEDS ("" = normal); "" for still clips
    speed: float  # pixels per frame
    radius: float
    start: tuple[float, float]  # centre (x, y) at frame 0
    background: float  # grey level in [0, 1]

    @property
    def caption(self) -> str:
        if self.direction == STILL:
            return f"a {self.colour} {self.shape} standing still"
        words = ("a", self.colour, self.shape, "moving", self.direction, self.speed_word)
        return " ".join(word for word in words if word)

    @property
    def image_caption(self) -> str:
        return f"a {self.colour} {self.shape}"


def draw_spec(rng: np.random.Generator, still_probability: float = 0.2) -> ClipSpec:
    """Draw a random clip description; the shape stays fully or nearly fully in frame."""
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    radius = float(rng.uniform(*SIZE_RANGE))
    background = float(rng.uniform(0.35, 0.6))
    if rng.random() < still_probability:
        direction, speed_word, speed = STILL, "", 0.0
    else:
        direction = str(rng.choice(list(DIRECTIONS)))
        speed_word = str(rng.choice(list(SPEEDS)))
        speed = float(rng.uniform(*SPEEDS[speed_word]))
    dx, dy = DIRECTIONS.get(direction, (0, 0))
    travel = speed * (FRAMES - 1)
    start = []
    for axis_step, extent in ((dx, WIDTH), (dy, HEIGHT)):
        low, high = radius, extent - radius
        if axis_step:  # centre the travel, with some jitter, so the path stays in frame if it can
            middle = extent / 2 + float(rng.uniform(-1, 1)) * max(0.0, (high - low - travel) / 2)
            start.append(middle - axis_step * travel / 2)
        else:
            start.append(float(rng.uniform(low, high)))
    return ClipSpec(colour, shape, direction, speed_word, speed, radius, (start[0], start[1]), background)


def _shape_mask(shape: str, cx: float, cy: float, radius: float, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage [H, W] in [0, 1] of a shape centred at (cx, cy)."""
    offsets = (np.arange(supersample) + 0.5) / supersample
    ys = (np.arange(HEIGHT)[:, None] + offsets[None]).reshape(-1)[:, None]
    xs = (np.arange(WIDTH)[:, None] + offsets[None]).reshape(-1)[None, :]
    u, v = xs - cx, ys - cy
    if shape == "circle":
        inside = u * u + v * v <= radius * radius
    elif shape == "square":
        half = radius * 0.85
        inside = (np.abs(u) <= half) & (np.abs(v) <= half)
    elif shape == "triangle":  # pointing up, centroid at the centre
        top, bottom = -radius, radius * 0.7
        half_width = (v - top) / (bottom - top) * radius * 1.05
        inside = (v >= top) & (v <= bottom) & (np.abs(u) <= half_width)
    else:
        raise ValueError(f"shape {shape!r} is unknown; use one of {SHAPES}")
    return inside.reshape(HEIGHT, supersample, WIDTH, supersample).mean(axis=(1, 3))


def render(spec: ClipSpec, frames: int = FRAMES) -> np.ndarray:
    """uint8 frames [F, H, W, 3] of a spec (a faint vertical gradient on the grey background)."""
    dx, dy = DIRECTIONS.get(spec.direction, (0, 0))
    gradient = np.linspace(-0.03, 0.03, HEIGHT)[:, None, None]
    background = np.clip(spec.background + gradient, 0, 1) * np.ones((HEIGHT, WIDTH, 3))
    colour = np.array(COLOURS[spec.colour])
    out = np.empty((frames, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for index in range(frames):
        cx = spec.start[0] + dx * spec.speed * index
        cy = spec.start[1] + dy * spec.speed * index
        cover = _shape_mask(spec.shape, cx, cy, spec.radius)[..., None]
        out[index] = np.round((background * (1 - cover) + colour * cover) * 255).astype(np.uint8)
    return out


def measured_motion(frames: np.ndarray, fps: float = FPS) -> float:
    """The official recipe's motion score of a generated or rendered clip (short-clip warning muted:
    a 2 s clip uses the samples at 0, 0.5, 1.0 and 1.5 s)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return motion_score(frames, fps=fps)


def make_clip(seed: int) -> tuple[np.ndarray, ClipSpec]:
    """One clip and its description, a pure function of ``seed``."""
    spec = draw_spec(np.random.default_rng([seed, 1]))
    return render(spec), spec


def make_image(seed: int) -> tuple[np.ndarray, ClipSpec]:
    """One still image [1, H, W, 3] and its description (caption: ``spec.image_caption``)."""
    spec = draw_spec(np.random.default_rng([seed, 2]), still_probability=1.0)
    return render(spec, frames=1), spec


def make_dataset(clips: int, images: int, seed: int = 0, progress: bool = True) -> dict:
    """The training set: uint8 clips and images, captions and measured motion labels.

    Returns {"clips" [N,F,H,W,3], "clip_captions", "clip_motion" [N] float32, "clip_speed" [N],
    "clip_direction", "clip_colour", "images" [M,1,H,W,3], "image_captions", "image_colour"}.
    Motion labels cost one optical-flow pass per clip (~0.1 s), so build this once.
    """
    clip_list, specs, motion = [], [], []
    for index in tqdm(range(clips), desc="clips + motion labels", disable=not progress):
        frames, spec = make_clip(seed * 1_000_003 + index)
        clip_list.append(frames)
        specs.append(spec)
        motion.append(measured_motion(frames))
    image_list, image_specs = [], []
    for index in range(images):
        frames, spec = make_image(seed * 1_000_003 + index)
        image_list.append(frames)
        image_specs.append(spec)
    empty = np.zeros((0, FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    return {
        "clips": np.stack(clip_list) if clip_list else empty,
        "clip_captions": [s.caption for s in specs],
        "clip_motion": np.array(motion, dtype=np.float32),
        "clip_speed": np.array([s.speed for s in specs], dtype=np.float32),
        "clip_direction": [s.direction for s in specs],
        "clip_colour": [s.colour for s in specs],
        "images": np.stack(image_list) if image_list else empty[:, :1],
        "image_captions": [s.image_caption for s in image_specs],
        "image_colour": [s.colour for s in image_specs],
    }


# -- measuring generated clips (the inverse of rendering; used by the evaluation and tests) ----------

SATURATION_THRESHOLD = 0.25  # max - min of RGB: the grey background is ~0, every shape colour >= 0.6
MIN_SHAPE_PIXELS = 12  # per frame; fewer saturated pixels count as "no shape"


def hue_of(rgb) -> float:
    """Hue in degrees [0, 360) of an RGB triple in [0, 1]."""
    r, g, b = (float(c) for c in rgb)
    high, low = max(r, g, b), min(r, g, b)
    if high - low < 1e-6:
        return 0.0
    if high == r:
        hue = ((g - b) / (high - low)) % 6
    elif high == g:
        hue = (b - r) / (high - low) + 2
    else:
        hue = (r - g) / (high - low) + 4
    return math.fmod(hue * 60 + 360, 360)


COLOUR_HUES = {name: hue_of(rgb) for name, rgb in COLOURS.items()}


def _as_float(frames) -> np.ndarray:
    frames = np.asarray(frames)
    return frames.astype(np.float32) / 255 if frames.dtype == np.uint8 else frames.astype(np.float32)


def shape_pixels(frames) -> np.ndarray:
    """Bool mask [F, H, W] of saturated (coloured) pixels: the shape on the grey background."""
    frames = _as_float(frames)
    return frames.max(axis=-1) - frames.min(axis=-1) > SATURATION_THRESHOLD


def shape_colour(frames) -> str | None:
    """The colour name whose hue is nearest to most coloured pixels, or None without a shape."""
    frames = _as_float(frames)
    mask = shape_pixels(frames)
    if mask.sum() < MIN_SHAPE_PIXELS * len(frames):
        return None
    pixels = frames[mask]
    high, low = pixels.max(axis=1), pixels.min(axis=1)
    r, g, b = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    delta = high - low
    hue = np.where(high == r, ((g - b) / delta) % 6, np.where(high == g, (b - r) / delta + 2, (r - g) / delta + 4)) * 60
    names = list(COLOUR_HUES)
    centres = np.array([COLOUR_HUES[name] for name in names])
    distance = np.abs((hue[:, None] - centres[None] + 180) % 360 - 180)
    votes = np.bincount(distance.argmin(axis=1), minlength=len(names))
    return names[int(votes.argmax())]


def shape_track(frames) -> np.ndarray:
    """Centroid (x, y) in pixels of the coloured pixels per frame [F, 2] (NaN where none)."""
    mask = shape_pixels(frames)
    ys, xs = np.mgrid[: mask.shape[1], : mask.shape[2]]
    track = np.full((len(mask), 2), np.nan)
    for index, frame_mask in enumerate(mask):
        if frame_mask.sum() >= MIN_SHAPE_PIXELS:
            track[index] = xs[frame_mask].mean(), ys[frame_mask].mean()
    return track


def shape_direction(frames, still_pixels: float = 4.0) -> str | None:
    """left/right/up/down from the centroid's travel first -> last frame, "still" if it moves less
    than ``still_pixels``, None without a shape."""
    track = shape_track(frames)
    valid = track[~np.isnan(track[:, 0])]
    if len(valid) < 2:
        return None
    dx, dy = valid[-1] - valid[0]
    if max(abs(dx), abs(dy)) < still_pixels:
        return STILL
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"
