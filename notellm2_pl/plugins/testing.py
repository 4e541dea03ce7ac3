"""Tiny, download-free backbones and contract checks, shipped for tests and for plugin authors.

``make_tiny_llm_checkpoint`` / ``make_tiny_encoder_checkpoint`` / ``make_tiny_vision_checkpoint`` build real
architectures from config objects and ``save_pretrained`` them, so the same ``from_pretrained`` code path as a hub
model is exercised.
``check_*_contract`` verify that a plugin honours the contract in ``notellm2_pl.plugins.contract``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from notellm2_pl.plugins.contract import Connector, LLMBackbone, VisionEncoder

TINY_CORPUS = (
    "Note: {\"image\":\"\",\"title\":\"\",\"topic\":\"\",\"content\":\"\"}, compress into one word: \" . "
    "笔记：{\"图片\":\"\",\"标题\":\"\",\"话题\":\"\",\"内容\":\"\"}，压缩为一个词：“”。 "
    "the a of and to in is it this that for on with my new love haul today red blue green round square lamp "
    "chair mug bag shoe dress cake coffee travel city beach mountain review best cheap great quality color "
    "0 1 2 3 4 5 6 7 8 9 ! ? , . : ; ' \" # @ ( ) [ ] { } < > / - _ = + * & % $ "
) * 4

TINY_WORDS = ["red", "lamp", "chair", "mug", "bag", "shoe", "dress", "cake", "coffee", "travel", "city", "beach",
              "mountain", "review", "best", "cheap", "great", "quality", "love", "haul", "today", "new", "round",
              "square", "blue", "green"]
"""Plain words for building random but tokenizable notes in tests and benchmarks."""

_LLM_SIZES: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
                              "tie_word_embeddings": True}


def tiny_tokenizer(vocab_size: int = 600) -> Any:
    """A byte-level BPE tokenizer trained in well under a second on a small built-in corpus."""
    from notellm2_pl.training.text_prior import train_tokenizer

    return train_tokenizer([TINY_CORPUS], vocab_size=vocab_size)


def make_tiny_llm_checkpoint(path: str | Path, model_type: str = "qwen2", **overrides: Any) -> str:
    """Write a random tiny causal LM of ``model_type`` (``qwen2``, ``qwen3``, ``llama``, ...) plus tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    tok = tiny_tokenizer()
    sizes = {**_LLM_SIZES, "head_dim": 16, **overrides}
    cfg = AutoConfig.for_model(model_type, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **sizes)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


TINY_TEMPLATE_WORDS = ["note", "image", "title", "topic", "content", "compress", "into", "one", "word"]


def tiny_wordpiece_vocab() -> list[str]:
    """A WordPiece vocabulary (``vocab.txt`` lines) for a tiny BERT: specials, every character of
    :data:`TINY_CORPUS` and the ASCII letters and digits (each also as a ``##`` continuation), and whole words."""
    import string

    chars = sorted(set(TINY_CORPUS.lower() + string.ascii_lowercase + string.digits) - set(string.whitespace))
    words = sorted(set(TINY_WORDS + TINY_TEMPLATE_WORDS))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words]


def make_tiny_encoder_checkpoint(path: str | Path, pooling: str | None = None, **overrides: Any) -> str:
    """Write a random tiny BERT (2 layers, width 32) with a WordPiece tokenizer over :func:`tiny_wordpiece_vocab`.

    Args:
        path: Folder to write.
        pooling: Also write a sentence-transformers pooling config (``mean`` or ``cls``); None: none.
        **overrides: ``BertConfig`` fields to change.

    Returns:
        The folder, loadable with ``from_pretrained`` (and ``HFTextEncoder``).
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(tiny_wordpiece_vocab()) + "\n", encoding="utf-8")
    tok = BertTokenizer.from_pretrained(str(path), do_lower_case=True)  # reads vocab.txt
    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "max_position_embeddings": 512, **overrides}
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **sizes)).save_pretrained(path)
    tok.save_pretrained(path)
    if pooling is not None:
        from notellm2_pl_backbones.hf_encoder import write_pooling_config

        write_pooling_config(path, pooling, sizes["hidden_size"])
    return str(path)


def make_tiny_vision_checkpoint(path: str | Path, kind: str = "clip", image_size: int = 32) -> str:
    """Write a random tiny CLIP or SigLIP vision tower plus its image processor."""
    import transformers as tf

    path = Path(path)
    common = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": image_size, "patch_size": 8}
    torch.manual_seed(0)
    if kind == "clip":
        model, proc = tf.CLIPVisionModel(tf.CLIPVisionConfig(**common)), tf.CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    elif kind == "siglip":
        model, proc = tf.SiglipVisionModel(tf.SiglipVisionConfig(**common)), tf.SiglipImageProcessor(
            size={"height": image_size, "width": image_size})
    else:
        raise ValueError(f"Unknown tiny vision kind {kind!r}; use 'clip' or 'siglip'.")
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return str(path)


def write_tiny_recipe(root: Path) -> tuple[Path, Path]:
    """Write a tiny mICL recipe (tiny Qwen2 + tiny CLIP + tiny Q-Former) over the tiny synthetic dataset.

    Returns:
        (recipe path, dataset root).
    """
    from notellm2_pl.data.synthetic import PRESETS, generate

    root = Path(root)
    llm, clip = make_tiny_llm_checkpoint(root / "llm"), make_tiny_vision_checkpoint(root / "clip")
    data = root / "data"
    generate(data, PRESETS["tiny"])
    cfg = root / "tiny.yaml"
    cfg.write_text(f"""
model:
  llm: {{class_path: HFCausalLM, init_args: {{pretrained: {llm}}}}}
  vision: {{class_path: CLIPVision, init_args: {{pretrained: {clip}}}}}
  connector:
    class_path: QFormerConnector
    init_args: {{num_query_tokens: 4, num_layers: 2, hidden_size: 32, num_heads: 2, intermediate_size: 64}}
  encoder: {{embed_dim: 16}}
data: {{root: {data}, eval_batch_size: 8, max_tokens: 96}}
trainer: {{accelerator: cpu}}
""")
    return cfg, data


# ------------------------------------------------------------------------------------------------ contracts
def check_llm_contract(llm: LLMBackbone) -> None:
    """Assert an LLM plugin honours the contract (shapes, tokens, attention maps with gradients)."""
    ids = llm.add_tokens(["<IMG_EMB_TEST>"])
    assert len(ids) == 1 and ids[0] == llm.tokenizer.convert_tokens_to_ids("<IMG_EMB_TEST>")
    x = llm.embed_tokens(torch.tensor([[1, 2, 3, ids[0]]]))
    assert x.shape == (1, 4, llm.hidden_size)
    x = x.detach().requires_grad_(True)
    out = llm(x, torch.ones(1, 4, dtype=torch.long), output_attentions=True)
    assert out.hidden.shape == (1, 4, llm.hidden_size)
    assert out.attentions is not None and len(out.attentions) == llm.num_layers
    a = out.attentions[0]
    assert a.shape[-2:] == (4, 4) and a.requires_grad
    torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)), atol=1e-4, rtol=0)


def check_vision_contract(vision: VisionEncoder) -> None:
    """Assert a vision plugin honours the contract."""
    cfg = vision.image_config
    assert cfg.size > 0 and len(cfg.mean) == 3 and len(cfg.std) == 3
    out = vision(torch.randn(2, 3, cfg.size, cfg.size))
    assert out.tokens.dim() == 3 and out.tokens.shape[0] == 2 and out.tokens.shape[-1] == vision.hidden_size
    assert out.pooled.shape == (2, vision.hidden_size)
    assert isinstance(vision.cache_key(), str)


def check_connector_contract(connector: Connector, num_inputs: int = 5) -> None:
    """Assert a connector plugin honours the contract."""
    x = torch.randn(2, num_inputs, connector.in_dim)
    y = connector(x)
    assert y.shape == (2, connector.num_tokens(num_inputs), connector.out_dim)
