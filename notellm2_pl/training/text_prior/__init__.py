"""Give a tiny LLM text priors: train a byte-level BPE tokenizer and a few minutes of causal-LM pretraining.

Why: image neglect (the effect NoteLLM-2 fixes) shows up when the LLM already "reads" text well. A random-init
tiny LLM has no such prior, so the demo pretrains one on the corpus text first (docs/design.md#data)::

    python -m notellm2_pl pretrain-text --data data/demo --out checkpoints/text_prior

The result is an ordinary Hugging Face checkpoint directory (``config.json``, ``model.safetensors``, tokenizer
files, plus ``text_prior.json`` with the settings and the loss curve) that the HF LLM backbone loads with
``pretrained: checkpoints/text_prior``.

Modules: :mod:`.tokenizer` (byte-level BPE), :mod:`.config` (the HF model config), :mod:`.corpus` (texts, packing,
held-out split), :mod:`.train` (the training run and the finished directory).
"""

from notellm2_pl.training.text_prior.config import DEFAULT_CONFIG, build_config, resolve_config
from notellm2_pl.training.text_prior.corpus import note_texts, texts_fingerprint
from notellm2_pl.training.text_prior.tokenizer import DEFAULT_VOCAB_SIZE, train_tokenizer
from notellm2_pl.training.text_prior.train import (
    DEFAULT_MAX_MINUTES,
    DEFAULT_MAX_STEPS,
    META_FILE,
    REUSE_KEYS,
    finished_settings,
    pretrain_text_prior,
    prior_settings,
)

__all__ = [
    "DEFAULT_CONFIG", "DEFAULT_MAX_MINUTES", "DEFAULT_MAX_STEPS", "DEFAULT_VOCAB_SIZE", "META_FILE", "REUSE_KEYS",
    "build_config", "finished_settings", "note_texts", "pretrain_text_prior", "prior_settings", "resolve_config",
    "texts_fingerprint", "train_tokenizer",
]
