"""The tiny zoo: small models of each family's real architecture, trained on vrp_shapes on a CPU.

``build`` makes a randomly initialised tiny model (config, word-level tokenizer, real processor);
``train`` trains one and saves it. Trained checkpoints ship in ``CHECKPOINTS/<family>`` and load as
``--model tiny_<family>``.
"""

from pathlib import Path

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
