"""The encoder's settings, declared once: recipes set them as ``model.encoder.<field>``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, TypeVar

_C = TypeVar("_C")

PROMPT_PRESETS = ("en", "zh")
SPLICE_MODES = ("insert", "replace")
TOKEN_INITS = ("mean", "normal")


@dataclass(frozen=True)
class EncoderConfig:
    """What the :class:`~notellm2_pl.model.encoder.NoteEncoder` builds around its backbones.

    Attributes:
        micl: Multimodal in-context learning (image compressed first; adds the visual embedding ``e_v``),
            docs/method.md#prompts-and-micl.
        late_fusion: Gate the vision pooled feature into the embeddings (docs/method.md#late-fusion).
        gate_init: Initial late-fusion gate value ``z`` (the weight on the LLM state; ``1 - z`` goes to the image).
            None: the paper's bias-free gate, ``z`` about 0.5 at the start. A value such as 0.95 adds a learnable
            bias starting at ``logit(z)``: the gate starts closed to the image, which then has to earn its weight.
        fusion_scales: Candidate strengths of late fusion at inference, chosen on validation
            (docs/method.md#late-fusion-strength-chosen-on-validation). Training always uses the full gate; at every
            validation pass the embeddings ``h + s (g - h)`` (``h`` the LLM state, ``g`` the gated mix) are scored for
            each ``s`` here, the best validation Recall@K wins (ties: the larger ``s``) and is stored in the model
            (checkpoints and exports carry it). Empty (default): always ``s = 1``, the paper's late fusion. Example:
            ``[0.0, 0.25, 0.5, 0.75, 1.0]``; 0 keeps the image only inside the LLM (mICL's in-context image).
        embed_dim: Output dimension ``d`` of the linear head (0: no head, the raw hidden state, for zero-shot
            baselines).
        prompt_preset: ``en`` (default) or ``zh`` (the original Chinese prompts, exactly).
        splice_mode: ``insert`` (visual tokens between ``image_tokens``, Qwen style) or ``replace`` (visual tokens
            replace the image placeholder, Llama style; no tag tokens).
        image_tokens: Open/close tags around the visual tokens in insert mode.
        marker_token: The mICL placeholder token.
        add_special_tokens: Add missing tag/marker tokens to the vocabulary (new rows initialised by
            ``new_token_init``). If false they must already exist (e.g. ``<|vision_start|>`` in Qwen2.5 tokenizers).
        new_token_init: ``mean`` or ``normal`` for new embedding rows.
        feature_cache: Cache the frozen vision tower's features in memory, so later epochs skip the tower. Needs a
            frozen tower and deterministic transforms (``--data.train_flip false``). Ignored without a vision tower.
        feature_cache_dir: Also keep the cached features on disk in this folder (one small file per image, keyed by
            the image file's identity, the preprocessing and the tower's weights): data-loader workers then skip
            decoding cached images, and runs over the same images share the features. Needs ``feature_cache``.
    """

    micl: bool = True
    late_fusion: bool = True
    gate_init: float | None = None
    fusion_scales: tuple[float, ...] = ()
    embed_dim: int = 64
    prompt_preset: Literal["en", "zh"] = "en"
    splice_mode: Literal["insert", "replace"] = "insert"
    image_tokens: tuple[str, str] = ("<img>", "</img>")
    marker_token: str = "<IMG_EMB>"
    add_special_tokens: bool = True
    new_token_init: Literal["mean", "normal"] = "mean"
    feature_cache: bool = False
    feature_cache_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_tokens", tuple(self.image_tokens))
        object.__setattr__(self, "fusion_scales", tuple(float(s) for s in self.fusion_scales or ()))
        _check_choice("prompt_preset", self.prompt_preset, PROMPT_PRESETS)
        _check_choice("splice_mode", self.splice_mode, SPLICE_MODES)
        _check_choice("new_token_init", self.new_token_init, TOKEN_INITS)
        if len(self.image_tokens) != 2:
            raise ValueError(f"model.encoder.image_tokens takes two tokens (open, close), got {list(self.image_tokens)}"
                             f". Example: model.encoder.image_tokens: ['<img>', '</img>'].")
        if self.gate_init is not None and not 0.0 < float(self.gate_init) < 1.0:
            raise ValueError(f"model.encoder.gate_init must be in (0, 1) (or null: the paper's gate), got "
                             f"{self.gate_init}. Example: model.encoder.gate_init: 0.95.")
        if self.fusion_scales and (not self.late_fusion or not all(0.0 <= s <= 1.0 for s in self.fusion_scales)):
            raise ValueError(f"model.encoder.fusion_scales needs late_fusion: true and values in [0, 1], got "
                             f"{list(self.fusion_scales)}. Example: model.encoder.fusion_scales: [0.0, 0.5, 1.0].")
        if int(self.embed_dim) < 0:
            raise ValueError(f"model.encoder.embed_dim must be >= 0 (0: no head), got {self.embed_dim}.")
        if self.feature_cache_dir is not None and not self.feature_cache:
            raise ValueError("model.encoder.feature_cache_dir needs model.encoder.feature_cache: true (and a frozen "
                             "vision tower). Set both, or model.encoder.feature_cache_dir: null.")

    @classmethod
    def from_value(cls, value: EncoderConfig | Mapping[str, Any] | None) -> EncoderConfig:
        """The config itself, or one built from a mapping (e.g. the ``encoder`` entry of checkpoint hparams)."""
        return config_from_value(cls, value, "model.encoder")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), as stored in checkpoint hyperparameters."""
        out = asdict(self)
        out["image_tokens"] = list(self.image_tokens)
        out["fusion_scales"] = list(self.fusion_scales)
        return out


def encoder_keys() -> tuple[str, ...]:
    """The option names of ``model.encoder``."""
    return tuple(f.name for f in fields(EncoderConfig))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"model.encoder.{name} must be one of {', '.join(choices)}; got {value!r}.")


def config_from_value(cls: type[_C], value: _C | Mapping[str, Any] | None, option: str) -> _C:
    """A settings dataclass itself, its defaults for None, or one built from a mapping (checkpoint hyperparameters).

    Args:
        cls: The dataclass.
        value: An instance, a mapping of its fields, or None.
        option: The config key it is set under, for the error (e.g. ``model.encoder``).

    Raises:
        ValueError: On a key the dataclass does not have, listing the ones it has.
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{option} has no option(s) {unknown}. Options: {', '.join(sorted(known))}.")
    return cls(**dict(value))
