"""VRP-Bench: does a vision-language model's reliability signal predict whether its answer is right?"""

__version__ = "0.1.0"
