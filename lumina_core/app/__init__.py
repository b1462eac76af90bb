"""The command-line app: ``python -m lumina_core generate`` (``cli``), text to video with loaded components
(``pipeline``) and the ComfyUI graph its files carry (``workflow``). It may import all of ``lumina_core``;
nothing in the library, ``parallel`` or ``demo`` imports it (docs/architecture.md)."""
