"""Backends: torch (CPU, CUDA) and ttml (Tenstorrent). See :mod:`ttexp.backends.base`."""
