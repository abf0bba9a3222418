"""ttexp: Hydra-composed language-model experiments on Tenstorrent (ttml) and PyTorch.

    python -m ttexp model=nano task=scratch              # train nano on Tiny Shakespeare
    python -m ttexp hardware=n300 model=nano task=scratch
    python -m ttexp experiment=nano_cpu                   # a laptop-sized run, a few minutes
"""

__version__ = "0.1.0"
