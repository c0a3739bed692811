"""The tiny zoo: small models of each family's real architecture, trained on vrp_shapes on a CPU.

``recipes`` holds each family's tiny recipe (small config, special tokens, chat template, real
processor, training text); ``build`` makes a randomly initialised tiny model from it (config,
word-level tokenizer, real processor); ``train`` trains one and saves it. Trained checkpoints ship in
``CHECKPOINTS/<family>``; ``models`` registers each as ``--model tiny_<family>``. The zoo imports
``vrp_bench.models``, never the other way round.
"""

from pathlib import Path

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
