"""Evaluation built on the core: judging networks, metrics, the ``riid eval`` report, the bench."""
