"""Motion score nodes: a typed value, one measured from frames by optical flow, or one given to a conditioning."""

from __future__ import annotations

from comfy_api.latest import io

from ..lumina_core.motion import motion_score
from .native import with_motion

MOTION_TOOLTIP = ("Motion score: mean optical-flow magnitude the video should have (higher = more motion). Negative "
                  "= no motion condition. Official values: 6 for the positive branch, 2 for the negative one.")


class LuminaVideoMSMotionScore(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSMotionScore",
            display_name="Lumina-Video Motion Score",
            category="Lumina-Video/motion",
            description="A motion score to connect to a schedule's or stage's motion input.",
            inputs=[io.Float.Input("value", default=6.0, min=-1.0, max=100.0, step=0.1, tooltip=MOTION_TOOLTIP)],
            outputs=[io.Float.Output(display_name="motion")],
        )

    @classmethod
    def execute(cls, value) -> io.NodeOutput:
        return io.NodeOutput(float(value))


class LuminaVideoMSMotionScoreFromVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSMotionScoreFromVideo",
            display_name="Lumina-Video Motion Score From Video",
            category="Lumina-Video/motion",
            description="Measures a clip's motion score by the official recipe (frames 0.5 s apart up to 4 s, resized "
                        "to 320x576, mean |flow|), with OpenCV DIS flow in place of UniMatch.",
            inputs=[
                io.Image.Input("images", tooltip="The clip's frames in order (IMAGE batch [frames, H, W, 3])."),
                io.Float.Input("fps", default=24.0, min=0.1, max=240.0, step=0.1,
                               tooltip="Frame rate of the clip; the recipe samples the frame nearest to every 0.5 s."),
            ],
            outputs=[io.Float.Output(display_name="motion")],
        )

    @classmethod
    def execute(cls, images, fps) -> io.NodeOutput:
        return io.NodeOutput(motion_score(images, fps=fps))  # only the sampled frames are copied and converted


class LuminaVideoMSMotionConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSMotionConditioning",
            display_name="Lumina-Video Motion Conditioning",
            category="Lumina-Video/motion",
            description="Gives a conditioning its own motion score, which wins over the schedule's: for core samplers "
                        "(KSampler...) and per-row control. Optionally switches to another value from a time t on, as "
                        "the official negative motion does (2, then 6 from t = 0.05).",
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="From Lumina-Video Text Encode."),
                io.Float.Input("motion", default=6.0, min=-1.0, max=100.0, step=0.1, tooltip=MOTION_TOOLTIP),
                io.Float.Input("switch_t", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="From this t on (0 = noise, 1 = finished video) the motion becomes "
                                       "'motion_after'. 1 = never switch."),
                io.Float.Input("motion_after", default=6.0, min=-1.0, max=100.0, step=0.1,
                               tooltip="Motion score from switch_t on."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, conditioning, motion, switch_t, motion_after) -> io.NodeOutput:
        value = float(motion) if switch_t >= 1.0 else (float(motion), (float(switch_t), float(motion_after)))
        return io.NodeOutput(with_motion(conditioning, value))
