"""scoregen: score-based generative models (diffusion models) in PyTorch."""

__version__ = "0.1.0"
