"""The composed representation model: vision -> connector -> splice into the LLM -> read-out -> fusion -> head.

Positions are tracked during splicing (the original lost them: docs/method.md#defects-of-the-original-code (B11)):
each row's visual tokens are inserted at its own ``image_pos``; every text position ``j`` moves to
``j + Q * (j >= image_pos)``; the multimodal read-out is the last non-pad token and the mICL read-out the token just
before the marker, both shifted the same way.

The read-outs are the backbone's own pooling (``LLMBackbone.pool``) over two spans of the spliced sequence: the whole
note for ``e_m``, the image block up to the marker for ``e_v``. A decoder pools the span's last token, and its states
over the image block ignore what follows, so one pass yields both. A bidirectional encoder pools mean or CLS and runs
the closed image block through a pass of its own, so that ``e_v`` never sees the note's text
(docs/method.md#text-encoders-in-the-llm-slot).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from notellm2_pl.data.processing import NoteFormat
from notellm2_pl.data.schema import NoteBatch
from notellm2_pl.model.config import EncoderConfig
from notellm2_pl.model.feature_cache import VisionFeatureCache
from notellm2_pl.model.late_fusion import LateFusionGate
from notellm2_pl.plugins.contract import Connector, LLMBackbone, VisionEncoder

ConnectorFactory = Callable[[int, int], Connector]


@dataclass
class EncoderOutput:
    """Embeddings and read-out details for one batch of notes.

    Attributes:
        e_m: L2-normalised multimodal embedding ``(B, d)``, fp32.
        e_v: L2-normalised visual (mICL) embedding ``(B, d)`` or None.
        last_pos: Spliced index of the last non-pad token ``(B,)``: the multimodal read-out token of a decoder (an
            encoder pools over every token up to it).
        pos_v: Spliced index of the last token of the mICL image block ``(B,)``, the one just before the marker: a
            decoder's visual read-out token (-1 without mICL).
        image_span: ``(start, end)`` spliced indices of the visual tokens ``(B, 2)`` (end exclusive).
        gate: Late-fusion gate values for ``e_m`` ``(B, H)`` or None.
        attentions: Per-layer attention probabilities when requested.
    """

    e_m: torch.Tensor
    e_v: torch.Tensor | None
    last_pos: torch.Tensor
    pos_v: torch.Tensor
    image_span: torch.Tensor
    gate: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def splice(text: torch.Tensor, mask: torch.Tensor, image_pos: torch.Tensor,
           visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert ``visual (B, Q, H)`` into ``text (B, L, H)`` at each row's ``image_pos``; returns (embeds, mask)."""
    b, length, h = text.shape
    q = visual.shape[1]
    j = torch.arange(length, device=text.device)
    new_pos = j[None, :] + q * (j[None, :] >= image_pos[:, None])  # (B, L)
    vis_pos = image_pos[:, None] + torch.arange(q, device=text.device)[None, :]  # (B, Q)
    out = text.new_zeros(b, length + q, h)
    out = out.scatter(1, new_pos[..., None].expand(-1, -1, h), text)
    out = out.scatter(1, vis_pos[..., None].expand(-1, -1, h), visual.to(text.dtype))  # (B, L+Q, H)
    new_mask = mask.new_zeros(b, length + q).scatter(1, new_pos, mask).scatter(1, vis_pos, 1)  # (B, L+Q)
    return out, new_mask


def shift(pos: torch.Tensor, image_pos: torch.Tensor, q: int) -> torch.Tensor:
    """Map unspliced token indices to spliced ones."""
    return pos + q * (pos >= image_pos).long() * (image_pos >= 0).long()


def span_mask(end: torch.Tensor, length: int) -> torch.Tensor:
    """0/1 mask ``(B, length)`` of the spans ``[0, end)``, one per row."""
    return (torch.arange(length, device=end.device)[None, :] < end[:, None]).long()  # (B, length)


def close_prefix(embeds: torch.Tensor, end: torch.Tensor, close: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each row of ``embeds (B, T, H)`` to ``[0, end)`` and append ``close (C, H)`` right after it.

    Returns:
        ``(embeds, mask)``: ``(B, max(end) + C, H)`` and its 0/1 mask, right-padded with zero vectors (nothing of
        a row beyond its ``end`` survives, masked or not).
    """
    b, length, h = embeds.shape
    c = close.shape[0]
    width = int(end.max()) + c
    x = F.pad(embeds, (0, 0, 0, max(0, width - length)))[:, :width]  # (B, W, H)
    mask = span_mask(end + c, width)  # (B, W)
    x = x * span_mask(end, width)[..., None].to(x.dtype)
    if c:
        pos = end[:, None] + torch.arange(c, device=end.device)[None, :]  # (B, C)
        x = x.scatter(1, pos[..., None].expand(-1, -1, h), close[None].expand(b, -1, -1).to(x.dtype))
    return x, mask


class NoteEncoder(nn.Module):
    """LLM + optional vision tower + connector, with mICL and late fusion, producing note embeddings.

    Args:
        llm: The LLM backbone.
        vision: The vision tower (None: text-only model).
        connector: Factory ``(in_dim, out_dim) -> Connector`` (None or NoConnector: no visual tokens).
        config: mICL, late fusion, head size, prompts, special tokens and feature cache
            (:class:`~notellm2_pl.model.config.EncoderConfig`).
    """

    def __init__(
        self,
        llm: LLMBackbone,
        vision: VisionEncoder | None = None,
        connector: ConnectorFactory | None = None,
        config: EncoderConfig | None = None,
    ) -> None:
        super().__init__()
        config = config if config is not None else EncoderConfig()
        self.config = config
        self.llm, self.vision = llm, vision
        use_cache = config.feature_cache and vision is not None  # a text-only model has no features to cache
        self.feature_cache = VisionFeatureCache(directory=config.feature_cache_dir) if use_cache else None
        hidden = llm.hidden_size
        self.connector = connector(vision.hidden_size, hidden) if (connector and vision) else None
        if self.connector is not None and self.connector.num_tokens(1) == 0:
            self.connector = None
        self._validate(connector)
        self.gate = LateFusionGate(vision.hidden_size, hidden, config.gate_init) if config.late_fusion else None
        self.head: nn.Module = nn.Linear(hidden, config.embed_dim, bias=False) if config.embed_dim else nn.Identity()
        if config.embed_dim:
            nn.init.normal_(self.head.weight, std=0.02)
        self._token_ids = self._ensure_tokens()
        self._frame = llm.special_ids()

    @property
    def micl(self) -> bool:
        """Whether the encoder produces the visual embedding ``e_v`` (mICL)."""
        return self.config.micl

    @property
    def late_fusion(self) -> bool:
        """Whether the late-fusion gate mixes the pooled vision feature into the embeddings."""
        return self.config.late_fusion

    @property
    def preset(self) -> str:
        """The prompt preset (``en`` or ``zh``)."""
        return self.config.prompt_preset

    @property
    def splice_mode(self) -> str:
        """``insert`` or ``replace``."""
        return self.config.splice_mode

    def _validate(self, connector: ConnectorFactory | None) -> None:
        if connector is not None and self.vision is None:
            raise ValueError("A connector needs a vision tower: set model.vision, or remove model.connector.")
        if self.micl and self.connector is None:
            raise ValueError("mICL compresses the image's visual tokens: it needs model.vision and a connector that "
                             "produces tokens (QFormerConnector or MLPConnector). Set model.encoder.micl: false "
                             "otherwise.")
        if self.late_fusion and self.vision is None:
            raise ValueError("Late fusion needs model.vision. Set model.encoder.late_fusion: false for a text-only "
                             "model.")

    @property
    def variant(self) -> str:
        """``micl``, ``basic`` (visual tokens, no mICL) or ``text`` (no visual tokens)."""
        return "micl" if self.micl else ("basic" if self.connector is not None else "text")

    def _ensure_tokens(self) -> dict[str, list[int]]:
        """Ids of the image tags and the mICL marker, added to the vocabulary when missing (and allowed)."""
        cfg = self.config
        wanted = list(cfg.image_tokens) if (self.connector is not None and self.splice_mode == "insert") else []
        wanted += [cfg.marker_token] if self.micl else []
        if not wanted:
            return {"open": [], "close": [], "marker": []}
        vocab = self.llm.tokenizer.get_vocab()
        missing = [t for t in wanted if t not in vocab]
        if missing and not cfg.add_special_tokens:
            raise ValueError(f"Tokens {missing} are not in the tokenizer. Set model.encoder.add_special_tokens: true, "
                             f"or choose tokens that exist (model.encoder.image_tokens / model.encoder.marker_token).")
        ids = self.llm.add_tokens(wanted, init=cfg.new_token_init)
        n_img = len(wanted) - int(self.micl)
        return {"open": ids[:1] if n_img else [], "close": ids[1:2] if n_img else [],
                "marker": ids[-1:] if self.micl else []}

    def note_format(self) -> NoteFormat:
        """What the data side needs to build this model's inputs."""
        return NoteFormat(
            tokenizer=self.llm.tokenizer,
            image_config=self.vision.image_config if self.vision is not None else None,
            variant=self.variant,
            preset=self.preset,
            image_open_ids=self._token_ids["open"],
            image_close_ids=self._token_ids["close"],
            marker_id=self._token_ids["marker"][0] if self._token_ids["marker"] else None,
            feature_store=self.feature_cache.store(self.vision) if self.feature_cache is not None else None,
            frame=self._frame,
        )

    def forward(self, batch: NoteBatch, output_attentions: bool = False) -> EncoderOutput:
        """Embed one batch of notes (``B`` rows); see :class:`EncoderOutput`."""
        ids, mask, image_pos = batch["input_ids"], batch["attention_mask"], batch["image_pos"]
        text = self.llm.embed_tokens(ids)  # (B, L, H)
        pooled, q = None, 0
        if self.vision is not None:
            px = batch["pixel_values"]
            if self.feature_cache is not None:
                vis = self.feature_cache(self.vision, px, batch.get("image_keys"), batch.get("pixels_skipped"))
            else:
                vis = self.vision(px)
            pooled = vis.pooled  # (B, D_v)
            if self.connector is not None:
                visual = self.connector(vis.tokens)  # (B, Q, H)
                q = visual.shape[1]
                text, mask = splice(text, mask, image_pos, visual)  # (B, L+Q, H)
        out = self.llm(text, mask, output_attentions=output_attentions)
        last_pos = shift(batch["attention_mask"].sum(1) - 1, image_pos, q)
        e_m, z = self._embed(self.llm.pool(out.hidden, mask), pooled)
        pos_v = torch.full_like(last_pos, -1)
        e_v = None
        if self.micl:
            pos_v = shift(batch["marker_pos"] - 1, image_pos, q)
            e_v, _ = self._embed(self._visual_state(text, out.hidden, pos_v + 1), pooled, scaled=False)
        span = torch.stack([image_pos, image_pos + q], dim=1) if q else torch.full((ids.shape[0], 2), -1)
        return EncoderOutput(e_m, e_v, last_pos, pos_v, span.to(ids.device), z, out.attentions)

    def _visual_state(self, embeds: torch.Tensor, hidden: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """``h_v``: the backbone's pooling of the image block, the spliced span ``[0, end)`` before the marker.

        Args:
            embeds: The spliced input embeddings ``(B, T, H)``.
            hidden: The LLM's states over them ``(B, T, H)``.
            end: Per row, the spliced marker position ``(B,)``.

        Returns:
            ``(B, H)``. A causal backbone without closing ids reads it from ``hidden`` (its states over the block
            ignore the text after it); any other runs the block, closed by its closing ids, through a pass of its
            own, so the text cannot reach ``h_v``.
        """
        close_ids = self._frame[1]
        if self.llm.is_causal and not close_ids:
            return self.llm.pool(hidden, span_mask(end, hidden.shape[1]))
        close = self.llm.embed_tokens(torch.tensor([close_ids], device=embeds.device))[0]  # (C, H)
        x, mask = close_prefix(embeds, end, close)  # (B, W, H), (B, W)
        return self.llm.pool(self.llm(x, mask).hidden, mask)

    def _embed(self, h: torch.Tensor, pooled: torch.Tensor | None,
               scaled: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gate (``scaled``: at the inference fusion scale) and project a read-out state ``(B, H)``.

        ``e_v`` passes ``scaled=False``: the fusion scale is chosen on ``e_m``'s validation recall, and at ``s = 0`` the
        visual embedding would be its LLM state alone, a state training never scored on its own
        (docs/method.md#late-fusion-strength-chosen-on-validation).
        """
        z = None
        if self.gate is not None:
            h, z = self.gate(h, pooled, scaled=scaled)
        return self.project(h), z

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The linear head and L2 normalisation that turn a (fused) state ``(B, H)`` into an embedding ``(B, d)``."""
        return F.normalize(self.head(h).float(), dim=-1)
