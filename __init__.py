"""ComfyUI entry point of the Lumina-Video node pack.

ComfyUI imports this file as a package and awaits :func:`comfy_entrypoint` (V3 schema), which also
adds the pack's server route for the frontend. The node modules import ComfyUI, so they are
imported here lazily: ``import lumina_core`` alone (the command line, plain pytest) never touches
ComfyUI.
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes import LuminaVideoExtension
    from .nodes.routes import register_routes

    register_routes()
    return LuminaVideoExtension()
