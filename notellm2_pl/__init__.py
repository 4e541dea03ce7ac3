"""notellm2_pl: NoteLLM-2 multimodal item-embedding models for I2I recommendation, on PyTorch Lightning.

Importing this package has no side effects: no plugin scan, no heavy imports.
"""

__version__ = "0.1.0"
