"""Motion score nodes: a typed value, or one measured from frames by optical flow."""

from __future__ import annotations

from comfy_api.latest import io

from ..lumina_core.motion import motion_score

MOTION_TOOLTIP = ("Motion score: mean optical-flow magnitude the video should have (higher = more motion). Negative "
                  "= no motion condition. Official values: 6 for the positive branch, 2 for the negative one.")


class LuminaVideoMotionScore(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMotionScore",
            display_name="Lumina-Video Motion Score",
            category="Lumina-Video/motion",
            description="A motion score to connect to a schedule's or stage's motion input.",
            inputs=[io.Float.Input("value", default=6.0, min=-1.0, max=100.0, step=0.1, tooltip=MOTION_TOOLTIP)],
            outputs=[io.Float.Output(display_name="motion")],
        )

    @classmethod
    def execute(cls, value) -> io.NodeOutput:
        return io.NodeOutput(float(value))


class LuminaVideoMotionScoreFromVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMotionScoreFromVideo",
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
        return io.NodeOutput(motion_score(images.cpu().numpy(), fps=fps))
