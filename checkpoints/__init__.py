"""Shipped trained checkpoints: ``<name>.safetensors`` + ``<name>.json`` (its card).

This package only locates the folder; loading lives in :mod:`probes.loading`.
"""

from pathlib import Path

__all__ = ["CHECKPOINT_DIR"]

#: Folder holding the shipped ``.safetensors`` weights and their JSON cards.
CHECKPOINT_DIR: Path = Path(__file__).resolve().parent
