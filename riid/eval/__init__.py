"""Evaluation built on the core: judging networks, metrics and the ``riid eval`` report."""
