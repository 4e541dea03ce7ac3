"""NoteLLM2Module: the LightningModule that trains a NoteEncoder with in-batch contrastive learning."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import IO, Any, Literal, Protocol

import lightning as L
import numpy as np
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from torch import nn

from notellm2_pl.data.processing import NoteFormat
from notellm2_pl.data.schema import EMBEDDING_KEYS, NoteBatch
from notellm2_pl.model.config import EncoderConfig
from notellm2_pl.model.encoder import ConnectorFactory, EncoderOutput, NoteEncoder
from notellm2_pl.model.losses import contrastive_loss, micl_loss, pair_set_loss
from notellm2_pl.plugins.contract import LLMBackbone, VisionEncoder
from notellm2_pl.retrieval.recall import evaluate_pairs, evaluate_subsets
from notellm2_pl.retrieval.results import format_table
from notellm2_pl.retrieval.spread import spread_metrics
from notellm2_pl.training.fusion_scale import choose_scale, fusion_scale, gate_states
from notellm2_pl.training.gradcache import grad_cache_training_step
from notellm2_pl.training.hard_negatives import HardNegativeConfig, HardNegativeMiner
from notellm2_pl.training.hparams import migrate_checkpoint_file, migrate_hparams
from notellm2_pl.training.optim import lr_lambda, param_groups

log = logging.getLogger(__name__)


class Embeddings(Protocol):
    """What the loss reads: an :class:`EncoderOutput`, or GradCache's cached embeddings."""

    e_m: torch.Tensor
    e_v: torch.Tensor | None
    gate: torch.Tensor | None


def warn_cpu_bf16(trainer: L.Trainer) -> bool:
    """Warn (and return True) when bf16 precision is asked for on CPU, where bf16 matmuls are ~500x slower."""
    precision = str(getattr(trainer, "precision", ""))
    if "bf16" in precision and isinstance(getattr(trainer, "accelerator", None), CPUAccelerator):
        log.warning("precision=%s on CPU: bf16 matmuls run about 500x slower than fp32 on CPUs without AMX/bf16 "
                    "units. Use --trainer.precision 32-true on CPU; bf16-mixed is for GPUs.", precision)
        return True
    return False


def compile_in_place(layers: list[nn.Module], backend: str = "inductor") -> None:
    """``torch.compile`` each layer in place (``nn.Module.compile``), with dynamic shapes.

    Compiling layer by layer keeps the splicing, pooling and fusion code eager (they index with data-dependent
    positions) and leaves parameter names, hence checkpoints and LoRA merges, untouched.
    """
    for layer in layers:
        layer.compile(backend=backend, dynamic=True)


class NoteLLM2Module(L.LightningModule):
    """Trains a multimodal note-embedding model the NoteLLM-2 way.

    Args:
        llm: LLM backbone plugin (e.g. ``HFCausalLM``).
        vision: Vision encoder plugin (``CLIPVision``, ``SiglipVision``, ``TimmVision``...); None for text-only.
        connector: Connector plugin; the model supplies ``in_dim``/``out_dim``. None/``NoConnector``: no visual tokens.
        encoder: The encoder's settings (mICL, late fusion, head size, prompts, special tokens, feature cache):
            :class:`~notellm2_pl.model.config.EncoderConfig`, set as ``model.encoder.<field>``.
        loss_weights: ``(w_t, w_v)``: weights of the losses on ``e_m`` and ``e_v`` under mICL (default 9:1).
        tau_init: Initial value of the learnable temperature parameter; logits are scaled by ``exp(tau)``.
        learn_tau: Train the temperature.
        mask_same_id: Mask negatives that are another copy of the anchor's note or of its positive's note (off
            only for parity).
        freeze_vision: Freeze the vision tower (the paper's setting).
        freeze_llm: Freeze the LLM entirely (e.g. connector-only training).
        llm_trainable_layers: With ``freeze_llm``, leave this many top LLM layers trainable.
        lr: Learning rate of the pretrained parts (LLM, unfrozen vision).
        lr_new: Learning rate of the new parts (connector, gate, head, temperature); None: same as ``lr``.
        weight_decay: AdamW weight decay.
        no_decay_norm_bias_tau: No weight decay on norms, biases and the temperature (False: parity).
        warmup_ratio: Fraction of steps for warmup.
        warmup_type: ``linear`` or ``log`` (the original's DeepSpeed WarmupDecayLR shape).
        val_ks: K values of the validation Recall@K (the first one is logged as ``val/recall``). The validation
            contrastive loss is logged as ``val/loss``; either can be the checkpoint monitor.
        test_ks: K values of the test Recall@K (on all pair files of the test split).
        grad_cache_chunk: GradCache (``notellm2_pl.training.gradcache``): encode the batch in chunks of this many
            notes, so a large contrastive batch fits in memory; switches to manual optimisation. None: off.
        manual_clip_val: Gradient-norm clipping in the GradCache path (set ``trainer.gradient_clip_val: null``
            there: Lightning refuses it under manual optimisation). None or 0: no clipping.
        compile_llm: ``torch.compile`` each LLM layer (the plugin's ``layer_groups()``) in place, with dynamic
            shapes: fuses the norms, rotary and activations around the matmuls. True: the ``inductor`` backend
            (on CPU it needs a C++ compiler, ``g++``); a string names another backend. The first steps pay the
            compilation (83 s for the demo LLM on 2 shared CPU cores); checkpoints are unchanged.
        hard_negatives: Hard negatives mined from the model's own index after a warm-up
            (:class:`~notellm2_pl.training.hard_negatives.HardNegativeConfig`, set as ``model.hard_negatives.<field>``;
            off unless ``start_step`` is set; docs/method.md#hard-negatives).
    """

    def __init__(
        self,
        llm: LLMBackbone,
        vision: VisionEncoder | None = None,
        connector: ConnectorFactory | None = None,
        encoder: EncoderConfig = EncoderConfig(),  # noqa: B008 - frozen, so one shared default is safe
        loss_weights: tuple[float, float] = (9.0, 1.0),
        tau_init: float = 3.0,
        learn_tau: bool = True,
        mask_same_id: bool = True,
        freeze_vision: bool = True,
        freeze_llm: bool = False,
        llm_trainable_layers: int = 0,
        lr: float = 3e-6,
        lr_new: float | None = None,
        weight_decay: float = 0.001,
        no_decay_norm_bias_tau: bool = True,
        warmup_ratio: float = 0.1,
        warmup_type: Literal["linear", "log"] = "linear",
        val_ks: tuple[int, ...] = (10, 100),
        test_ks: tuple[int, ...] = (10, 20, 50, 100, 1000),
        grad_cache_chunk: int | None = None,
        manual_clip_val: float | None = 1.0,
        compile_llm: bool | str = False,
        hard_negatives: HardNegativeConfig = HardNegativeConfig(),  # noqa: B008 - frozen
    ) -> None:
        super().__init__()
        config = EncoderConfig.from_value(encoder)  # a dict when loaded from checkpoint hyperparameters
        self.hard_negatives = HardNegativeConfig.from_value(hard_negatives)
        hard_negatives = self.hard_negatives.to_dict()  # plain hyperparameters, as for the encoder
        # save_hyperparameters reads this frame's locals: store the encoder settings as a plain dict, so checkpoints
        # stay loadable with torch.load(weights_only=True)
        encoder = config.to_dict()
        self.save_hyperparameters(ignore=["llm", "vision", "connector"])
        if config.feature_cache and not freeze_vision:
            raise ValueError("model.encoder.feature_cache needs a frozen vision tower: set model.freeze_vision true.")
        self.encoder = NoteEncoder(llm, vision, connector, config)
        self.tau = nn.Parameter(torch.tensor(float(tau_init)), requires_grad=learn_tau)
        if vision is not None and freeze_vision:
            vision.lock()
        if freeze_llm:
            llm.lock(unlocked_groups=llm_trainable_layers)
        if compile_llm:
            compile_in_place(llm.layer_groups(), "inductor" if compile_llm is True else str(compile_llm))
        # from_pretrained returns models in eval mode and Lightning never calls .train(): without this the LLM would
        # train with its dropout off. A frozen tower stays in eval mode (Lightning's "modules in eval mode" warning
        # at fit start counts its modules).
        self.train()
        self._set_frozen_parts_eval()
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # ((B, 1 or 2, d) [e_m; e_v], index)
        self._scaled_outputs: dict[float, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # fusion scale -> e_m
        self.automatic_optimization = grad_cache_chunk is None  # GradCache steps the optimiser itself

    # ------------------------------------------------------------------------------------------------ forward
    def note_format(self) -> NoteFormat:
        """The note format the data side must produce (tokenizer, image config, template...)."""
        return self.encoder.note_format()

    def forward(self, batch: NoteBatch, output_attentions: bool = False) -> EncoderOutput:
        """Embed a batch of notes with the encoder."""
        return self.encoder(batch, output_attentions=output_attentions)

    # ------------------------------------------------------------------------------------------------ checkpoints
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | os.PathLike[str] | IO[bytes], *args: Any,
                             **kwargs: Any) -> NoteLLM2Module:
        """Lightning's loader (same arguments), also for checkpoints saved with the flat hyperparameter layout.

        Lightning builds the module from the checkpoint's hyperparameters before any hook runs, so a flat-layout
        checkpoint is loaded from a migrated copy (:func:`~notellm2_pl.training.hparams.migrate_checkpoint_file`).
        """
        with tempfile.TemporaryDirectory() as tmp:
            migrated = migrate_checkpoint_file(checkpoint_path, tmp)
            return super().load_from_checkpoint(migrated or checkpoint_path, *args, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Bring the checkpoint's hyperparameters to the current layout (resume, ``--ckpt_path``)."""
        if self.CHECKPOINT_HYPER_PARAMS_KEY in checkpoint:
            checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY] = migrate_hparams(checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY])

    def setup(self, stage: str) -> None:
        """Warn about bf16 on CPU; say why the frozen tower's modules stay in eval mode."""
        warn_cpu_bf16(self.trainer)
        tower = self._frozen_tower()
        if stage == "fit" and tower is not None and self.trainer.is_global_zero:
            log.info("The %d modules of the frozen vision tower stay in eval mode on purpose; Lightning's 'modules "
                     "in eval mode' warning at fit start counts them.", sum(1 for _ in tower.modules()))

    def _frozen_tower(self) -> nn.Module | None:
        return self.encoder.vision if self.hparams.freeze_vision else None

    def _set_frozen_parts_eval(self) -> None:
        tower = self._frozen_tower()
        if tower is not None:
            tower.eval()  # frozen tower: no dropout, frozen batch-norm statistics, cacheable features

    def on_train_epoch_start(self) -> None:
        """Keep the frozen tower in eval mode."""
        self._set_frozen_parts_eval()  # in case anything called .train() on the whole module since

    def configure_callbacks(self) -> list[L.Callback]:
        """The hard-negative miner when ``model.hard_negatives.start_step`` is set."""
        return [HardNegativeMiner(self.hard_negatives)] if self.hard_negatives.enabled else []

    # ------------------------------------------------------------------------------------------------ loss
    def _gathered_loss(self, emb: torch.Tensor, ids: torch.Tensor,
                       logit_scale: torch.Tensor | None = None, negatives: int = 0) -> torch.Tensor:
        """Contrastive loss of the local rows against the global batch, gathered with gradients; the last
        ``negatives`` rows are this rank's mined hard negatives (extra columns of its anchors, never gathered)."""
        n = emb.shape[0] - negatives
        emb, neg, ids, neg_ids = emb[:n], emb[n:], ids[:n], ids[n:]  # (2B, d), (M, d), (2B,), (M,)
        if self._trainer is not None and self._trainer.world_size > 1:
            all_emb = self.all_gather(emb, sync_grads=True).flatten(0, 1)  # (W*b, d)
            all_ids = self.all_gather(ids).flatten(0, 1)  # (W*b,)
            offset = self.global_rank * emb.shape[0]
        else:
            all_emb, all_ids, offset = emb, ids, 0
        use_ids = self.hparams.mask_same_id
        scale = self.tau.exp() if logit_scale is None else logit_scale
        return contrastive_loss(emb, all_emb, offset, scale, ids if use_ids else None,
                                all_ids if use_ids else None, neg if negatives else None,
                                neg_ids if use_ids and negatives else None)

    def compute_loss(self, batch: NoteBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts for one batch laid out as ``[queries; targets]`` (then any mined negatives)."""
        return self.loss_from_output(self(batch), batch["note_hash"], negatives=batch.get("num_negatives", 0))

    def loss_from_output(self, out: Embeddings, ids: torch.Tensor, logit_scale: torch.Tensor | None = None,
                         negatives: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and parts from the embeddings (``out.e_m``, ``out.e_v``, ``out.gate``); GradCache reuses this.

        The last ``negatives`` rows are mined hard negatives (``[queries; targets; negatives]``), for ``e_m`` and
        ``e_v`` alike.
        """
        loss_m = self._gathered_loss(out.e_m, ids, logit_scale, negatives)
        parts = {"loss_m": loss_m}
        if out.gate is not None:  # mean late-fusion weight on the LLM state (1 - gate_mean goes to the image)
            parts["gate_mean"] = out.gate.detach().mean()
        if out.e_v is None:
            return loss_m, parts
        parts["loss_v"] = self._gathered_loss(out.e_v, ids, logit_scale, negatives)
        return micl_loss(loss_m, parts["loss_v"], tuple(self.hparams.loss_weights)), parts

    def training_step(self, batch: NoteBatch, batch_idx: int) -> torch.Tensor:
        """One step: the contrastive loss (automatic optimisation), or a whole GradCache step (manual)."""
        if self.hparams.get("grad_cache_chunk"):
            return grad_cache_training_step(self, batch)
        loss, parts = self.compute_loss(batch)
        b = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=b)
        self.log("train/logit_scale", self.tau.exp(), batch_size=b)
        return loss

    # ------------------------------------------------------------------------------------------------ eval
    def validation_step(self, batch: NoteBatch, batch_idx: int) -> None:
        """Collect ``e_m`` and ``e_v`` with the full gate, and ``e_m`` at each other candidate fusion scale (``e_v``
        keeps the full gate; one forward: the e_m read-out is re-mixed, only the head runs again)."""
        gate, scales = self.encoder.gate, self._scale_candidates()
        with fusion_scale(gate, 1.0), gate_states(gate if scales else None) as states:
            self._collect_step(batch)
        if scales:
            h, g = states[0]  # the e_m read-out's call (the first of the forward)
            for scale in scales:
                e_m = self.encoder.project(gate.at_scale(h, g, scale)).detach()[:, None]  # (B, 1, d)
                self._scaled_outputs.setdefault(scale, []).append((e_m, batch["index"]))

    def _collect_step(self, batch: NoteBatch) -> None:
        out = self(batch)
        emb = [out.e_m] if out.e_v is None else [out.e_m, out.e_v]
        self._val_outputs.append((torch.stack(emb, dim=1).detach(), batch["index"]))  # (B, 1 or 2, d)

    def _scale_candidates(self) -> list[float]:
        return [s for s in self.encoder.config.fusion_scales if s != 1.0] if self.encoder.gate is not None else []

    def on_validation_epoch_end(self) -> None:
        """Recall@K of the collected ``e_m`` over the validation pool, and the contrastive loss (``val/loss``)."""
        if not self._val_outputs:
            return
        emb, idx = self._collect_outputs(self._val_outputs)
        dm = self.trainer.datamodule
        metrics = self._recall(emb[:, 0], idx, dm.val_pool_ids, dm.val_pairs)
        if dm.val_pairs:
            metrics["val/loss"] = float(self._val_loss(emb, idx, dm.val_pool_ids, dm.val_pairs, dm.hparams.batch_size))
        if self.encoder.config.fusion_scales:
            metrics, e_m = self._choose_fusion_scale(metrics, emb[:, :1], dm.val_pool_ids, dm.val_pairs)
            emb = torch.cat([e_m, emb[:, 1:]], dim=1)  # (P, 1 or 2, d): e_m at the chosen scale, e_v as collected
        metrics.update(self._spread_metrics(emb, idx, dm.val_pool_ids))
        self.log_dict(metrics, sync_dist=False, rank_zero_only=False)

    def _choose_fusion_scale(self, full_gate: dict[str, float], full_e_m: torch.Tensor, pool_ids: list[str],
                             pairs: list) -> tuple[dict[str, float], torch.Tensor]:
        """Score every candidate scale, store the winner in the gate; ``val/recall`` becomes the winner's.

        Returns:
            The metrics, and the winner's collected ``e_m`` ``(P, 1, d)``, in the rows of ``full_e_m``.
        """
        by_scale = {1.0: full_gate} if 1.0 in self.encoder.config.fusion_scales else {}
        collected = {1.0: full_e_m}
        for scale, outputs in self._scaled_outputs.items():
            collected[scale], idx = self._collect_outputs(outputs)
            by_scale[scale] = self._recall(collected[scale][:, 0], idx, pool_ids, pairs)
        self._scaled_outputs.clear()
        best = choose_scale({s: m["val/recall"] for s, m in by_scale.items()})
        self.encoder.gate.inference_scale.fill_(best)
        at_scale = {f"val/recall_at_scale/{s:g}": m["val/recall"] for s, m in by_scale.items()}
        metrics = {**full_gate, **by_scale[best], **at_scale, "val/fusion_scale": best,
                   "val/recall_full_gate": full_gate["val/recall"]}
        return metrics, collected[best]

    def _spread_metrics(self, emb: torch.Tensor, idx: torch.Tensor, pool_ids: list[str]) -> dict[str, float]:
        """``val/spread/<key>`` and ``val/effective_rank/<key>`` of the validation pool as the model embeds it (at the
        chosen fusion scale); a collapsed set gets a WARNING naming the key (docs/method.md#collapsed-embeddings)."""
        _, mat = self._dedupe(emb, idx, pool_ids)  # (N, 1 or 2, d)
        metrics, collapsed = spread_metrics({key: mat[:, k] for k, key in enumerate(EMBEDDING_KEYS[: mat.shape[1]])})
        for line in collapsed if self.trainer.is_global_zero else []:
            log.warning("Validation at step %d: %s: its scores tie and its Recall@K means nothing "
                        "(docs/method.md#collapsed-embeddings).", self.global_step, line)
        return metrics

    def test_step(self, batch: NoteBatch, batch_idx: int) -> None:
        """Collect ``e_m`` (and ``e_v``) as the model embeds (the gate at its stored inference scale)."""
        self._collect_step(batch)

    def on_test_epoch_end(self) -> None:
        """Recall@K over every pair file of the test split (all + subsets), pool = all test notes."""
        emb, idx = self._collect_outputs(self._val_outputs)
        dm = self.trainer.datamodule
        ids, mat = self._dedupe(emb[:, 0], idx, dm.pool_ids("test"))
        results = evaluate_subsets(mat, ids, dm.test_pair_sets(), ks=tuple(self.hparams.test_ks))
        self.test_results = results
        for subset, res in results.items():
            self.log_dict({f"test/{subset}/R@{k}": float(v) for k, v in res.recalls.items()}, rank_zero_only=True)
        if self.trainer.is_global_zero:
            print(format_table(results))

    def _collect_outputs(self, outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        emb = torch.cat([e for e, _ in outputs])
        idx = torch.cat([i for _, i in outputs])
        outputs.clear()
        if self.trainer.world_size > 1:
            emb, idx = self.all_gather(emb).flatten(0, 1), self.all_gather(idx).flatten(0, 1)
        return emb, idx

    @staticmethod
    def _dedupe(emb: torch.Tensor, idx: torch.Tensor, pool_ids: list[str]) -> tuple[list[str], np.ndarray]:
        """Order rows by pool position, dropping the padding duplicates of a distributed sampler."""
        order: dict[int, torch.Tensor] = {}
        for e, i in zip(emb, idx.tolist()):
            order.setdefault(i, e)
        keys = sorted(order)
        return [pool_ids[i] for i in keys], torch.stack([order[i] for i in keys]).float().cpu().numpy()

    def _val_loss(self, emb: torch.Tensor, idx: torch.Tensor, pool_ids: list[str], pairs: list[tuple[str, str]],
                  batch_pairs: int) -> torch.Tensor:
        """The training objective on the validation ``pairs`` in chunks of ``batch_pairs`` (the training batch size),
        from the collected ``emb`` ``(P, 1 or 2, d)`` (``e_m``, ``e_v``) at pool positions ``idx`` ``(P,)`` (a note's
        identity, for same-note masking) of ``pool_ids``."""
        first_row: dict[str, int] = {}
        for row, i in enumerate(idx.tolist()):
            first_row.setdefault(pool_ids[i], row)
        pair_rows = torch.tensor([(first_row[q], first_row[t]) for q, t in pairs], dtype=torch.long,
                                 device=emb.device)  # (n, 2)
        ids = idx.to(emb.device) if self.hparams.mask_same_id else None
        scale = self.tau.detach().exp()
        losses = [pair_set_loss(emb[:, k].float(), pair_rows, batch_pairs, scale, ids) for k in range(emb.shape[1])]
        return losses[0] if len(losses) == 1 else micl_loss(losses[0], losses[1], tuple(self.hparams.loss_weights))

    def _recall(self, emb: torch.Tensor, idx: torch.Tensor, pool_ids: list[str], pairs: list) -> dict[str, float]:
        ids, mat = self._dedupe(emb, idx, pool_ids)
        res = evaluate_pairs(mat, ids, pairs, ks=tuple(self.hparams.val_ks))
        metrics = {f"val/R@{k}": float(v) for k, v in res.recalls.items()}
        metrics["val/recall"] = metrics[f"val/R@{self.hparams.val_ks[0]}"]
        metrics["val/chance@" + str(self.hparams.val_ks[0])] = min(1.0, self.hparams.val_ks[0] / max(1, res.pool_size))
        return metrics

    def predict_step(self, batch: NoteBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Note ids and their embeddings (``e_m``, and ``e_v`` under mICL) on the CPU."""
        out = self(batch)
        result = {"note_ids": batch["note_ids"], "e_m": out.e_m.float().cpu()}
        if out.e_v is not None:
            result["e_v"] = out.e_v.float().cpu()
        return result

    # ------------------------------------------------------------------------------------------------ optim
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: (pretrained | new parts) x (decay | no decay) (:func:`.optim.param_groups`)."""
        hp = self.hparams
        return param_groups(self.named_parameters(), hp.lr, hp.lr if hp.lr_new is None else hp.lr_new,
                            hp.weight_decay, hp.no_decay_norm_bias_tau)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over :meth:`param_groups`, with the warmup-then-linear-decay schedule stepped every step."""
        opt = torch.optim.AdamW(self.param_groups(), betas=(0.9, 0.999), eps=1e-8)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_ratio * total)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_lambda(s, total, warmup, self.hparams.warmup_type))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

