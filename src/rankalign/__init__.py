"""rankalign: align language models with preferences by ranking responses, without RL."""

__version__ = "0.1.0"
