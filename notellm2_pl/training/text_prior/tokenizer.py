"""The text prior's tokenizer: a byte-level BPE trained on the corpus, or an existing one made usable."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
DEFAULT_VOCAB_SIZE = 6000


def train_tokenizer(texts: Sequence[str], vocab_size: int = DEFAULT_VOCAB_SIZE, model_max_length: int = 512) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` (any script: Chinese, English, emoji; nothing is ever unknown).

    The tokenizer adds ``<s>`` in front of every encoded text (as Llama does; ``add_special_tokens=False`` turns it
    off) and never appends ``</s>``. No normalisation is applied, so full-width punctuation stays as written.

    Args:
        texts: Training texts.
        vocab_size: Upper bound on the vocabulary (a small corpus may yield fewer tokens).
        model_max_length: Recorded as the tokenizer's ``model_max_length``.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with bos ``<s>``, eos ``</s>``, pad ``<pad>``, unk ``<unk>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ValueError("train_tokenizer needs at least one text.")
    specials = [BOS, EOS, PAD, UNK]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def prepare_tokenizer(tokenizer: Any, texts: Sequence[str], vocab_size: int) -> Any:
    """The tokenizer to pretrain with: trained on ``texts`` (None), loaded (a path / hub id), or the one given.

    Raises:
        ValueError: The tokenizer has no bos or eos token.
    """
    if tokenizer is None:
        t0 = time.perf_counter()
        tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
        log.info("Trained a byte-level BPE tokenizer: %d tokens (%.1f s)", len(tokenizer), time.perf_counter() - t0)
    elif isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer needs bos and eos tokens; pass tokenizer=None to train one on the texts.")
    return tokenizer
