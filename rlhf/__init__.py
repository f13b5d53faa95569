"""RLHF Space: the whole RLHF loop (generate, prefer, train, chat, share) on a small language model."""

__version__ = "0.1.0"
