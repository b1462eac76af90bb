"""Demo training, outside the package users install: the trainer (``python -m training.train``, run from the
repository root), the procedural data it learns from (``demo_data``), and the logs and resumable state of the
runs that made ``lumina_core/demo/models``. Neither the wheel nor the registry archive ships this folder."""
