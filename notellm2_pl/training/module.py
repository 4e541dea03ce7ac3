"""NoteLLM2Module: the LightningModule that trains a NoteEncoder with in-batch contrastive learning."""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import nn

from notellm2_pl.plugins.contract import LLMBackbone, VisionEncoder
from notellm2_pl.model.losses import contrastive_loss, micl_loss
from notellm2_pl.model.encoder import ConnectorFactory, EncoderOutput, NoteEncoder

log = logging.getLogger(__name__)


def warn_cpu_bf16(trainer: Any) -> bool:
    """Warn (and return True) when bf16 precision is asked for on CPU, where bf16 matmuls are ~500x slower."""
    from lightning.pytorch.accelerators import CPUAccelerator

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


def lr_lambda(step: int, total: int, warmup: int, kind: str) -> float:
    """Warmup (``linear`` or DeepSpeed-style ``log``) then linear decay to 0 at ``total`` steps."""
    if step < warmup:
        if kind == "log":
            return math.log(step + 1) / math.log(warmup) if warmup > 1 else 1.0
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


class NoteLLM2Module(L.LightningModule):
    """Trains a multimodal note-embedding model the NoteLLM-2 way.

    Args:
        llm: LLM backbone plugin (e.g. ``HFCausalLM``).
        vision: Vision encoder plugin (``CLIPVision``, ``SiglipVision``, ``TimmVision``...); None for text-only.
        connector: Connector plugin; the model supplies ``in_dim``/``out_dim``. None/``NoConnector``: no visual tokens.
        micl: Multimodal in-context learning (docs/method.md#prompts-and-micl).
        late_fusion: Late-fusion gate (docs/method.md#late-fusion).
        embed_dim: Output embedding size ``d`` (0: raw hidden state, for zero-shot baselines).
        loss_weights: ``(w_t, w_v)``: weights of the losses on ``e_m`` and ``e_v`` under mICL (default 9:1).
        tau_init: Initial value of the learnable temperature parameter; logits are scaled by ``exp(tau)``.
        learn_tau: Train the temperature.
        mask_same_id: Mask negatives that are another copy of the anchor's own note (off only for parity).
        prompt_preset: ``en`` or ``zh`` (original prompts).
        splice_mode: ``insert`` (between image tags) or ``replace`` (placeholder replaced).
        image_tokens: Image tag tokens for insert mode.
        marker_token: mICL marker token.
        add_special_tokens: Add missing special tokens (mean-initialised rows).
        new_token_init: ``mean`` or ``normal`` for new token rows.
        freeze_vision: Freeze the vision tower (the paper's setting).
        freeze_llm: Freeze the LLM entirely (e.g. connector-only training).
        llm_trainable_layers: With ``freeze_llm``, leave this many top LLM layers trainable.
        lr: Learning rate of the pretrained parts (LLM, unfrozen vision).
        lr_new: Learning rate of the new parts (connector, gate, head, temperature); None: same as ``lr``.
        weight_decay: AdamW weight decay.
        no_decay_norm_bias_tau: No weight decay on norms, biases and the temperature (False: parity).
        warmup_ratio: Fraction of steps for warmup.
        warmup_type: ``linear`` or ``log`` (the original's DeepSpeed WarmupDecayLR shape).
        val_ks: K values of the validation Recall@K (the first one is logged as ``val/recall``).
        test_ks: K values of the test Recall@K (on all pair files of the test split).
        feature_cache: Cache the frozen vision tower's features in memory, so later epochs skip the tower. Needs a
            frozen tower and deterministic transforms (``--data.train_flip false``).
        feature_cache_dir: Also keep the cached features on disk in this folder (one small file per image, keyed
            by the image file's identity, the preprocessing and the tower's weights): data-loader workers then skip
            decoding cached images, and runs over the same images share the features. Needs ``feature_cache``.
        grad_cache_chunk: GradCache (``notellm2_pl.training.gradcache``): encode the batch in chunks of this many notes, so
            a large contrastive batch fits in memory; switches to manual optimisation. None: off.
        manual_clip_val: Gradient-norm clipping in the GradCache path (set ``trainer.gradient_clip_val: null``
            there: Lightning refuses it under manual optimisation). None or 0: no clipping.
        compile_llm: ``torch.compile`` each LLM layer (the plugin's ``layer_groups()``) in place, with dynamic
            shapes: fuses the norms, rotary and activations around the matmuls. True: the ``inductor`` backend
            (on CPU it needs a C++ compiler, ``g++``); a string names another backend. The first steps pay the
            compilation (83 s for the demo LLM on 2 shared CPU cores); checkpoints are unchanged.
    """

    def __init__(
        self,
        llm: LLMBackbone,
        vision: VisionEncoder | None = None,
        connector: ConnectorFactory | None = None,
        micl: bool = True,
        late_fusion: bool = True,
        embed_dim: int = 64,
        loss_weights: tuple[float, float] = (9.0, 1.0),
        tau_init: float = 3.0,
        learn_tau: bool = True,
        mask_same_id: bool = True,
        prompt_preset: Literal["en", "zh"] = "en",
        splice_mode: Literal["insert", "replace"] = "insert",
        image_tokens: tuple[str, str] = ("<img>", "</img>"),
        marker_token: str = "<IMG_EMB>",
        add_special_tokens: bool = True,
        new_token_init: Literal["mean", "normal"] = "mean",
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
        feature_cache: bool = False,
        feature_cache_dir: str | None = None,
        grad_cache_chunk: int | None = None,
        manual_clip_val: float | None = 1.0,
        compile_llm: bool | str = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["llm", "vision", "connector"])
        has_vision = vision is not None
        self.encoder = NoteEncoder(llm, vision, connector, micl, late_fusion, embed_dim, prompt_preset,
                                   splice_mode, tuple(image_tokens), marker_token, add_special_tokens, new_token_init,
                                   feature_cache and has_vision, feature_cache_dir if has_vision else None)
        if feature_cache and not freeze_vision:
            raise ValueError("model.feature_cache needs a frozen vision tower: set model.freeze_vision true.")
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
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.automatic_optimization = grad_cache_chunk is None  # GradCache steps the optimiser itself

    # ------------------------------------------------------------------------------------------------ forward
    def note_format(self):
        """The note format the data side must produce (tokenizer, image config, template...)."""
        return self.encoder.note_format()

    def forward(self, batch: dict, output_attentions: bool = False) -> EncoderOutput:
        return self.encoder(batch, output_attentions=output_attentions)

    def setup(self, stage: str) -> None:
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
        self._set_frozen_parts_eval()  # in case anything called .train() on the whole module since

    # ------------------------------------------------------------------------------------------------ loss
    def _gathered_loss(self, emb: torch.Tensor, ids: torch.Tensor,
                       logit_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Contrastive loss of the local rows against the global batch, gathered with gradients."""
        if self._trainer is not None and self._trainer.world_size > 1:
            all_emb = self.all_gather(emb, sync_grads=True).flatten(0, 1)  # (W*b, d)
            all_ids = self.all_gather(ids).flatten(0, 1)  # (W*b,)
            offset = self.global_rank * emb.shape[0]
        else:
            all_emb, all_ids, offset = emb, ids, 0
        use_ids = self.hparams.mask_same_id
        scale = self.tau.exp() if logit_scale is None else logit_scale
        return contrastive_loss(emb, all_emb, offset, scale, ids if use_ids else None,
                                all_ids if use_ids else None)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts for one batch of pairs laid out as ``[queries; targets]``."""
        return self.loss_from_output(self(batch), batch["note_hash"])

    def loss_from_output(self, out: Any, ids: torch.Tensor,
                         logit_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and parts from the embeddings (``out.e_m``, ``out.e_v``, ``out.gate``); GradCache reuses this."""
        loss_m = self._gathered_loss(out.e_m, ids, logit_scale)
        parts = {"loss_m": loss_m}
        if out.gate is not None:  # mean late-fusion weight on the LLM state (1 - gate_mean goes to the image)
            parts["gate_mean"] = out.gate.detach().mean()
        if out.e_v is None:
            return loss_m, parts
        parts["loss_v"] = self._gathered_loss(out.e_v, ids, logit_scale)
        return micl_loss(loss_m, parts["loss_v"], tuple(self.hparams.loss_weights)), parts

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.hparams.get("grad_cache_chunk"):
            from notellm2_pl.training.gradcache import grad_cache_training_step

            return grad_cache_training_step(self, batch)
        loss, parts = self.compute_loss(batch)
        b = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=b)
        self.log("train/logit_scale", self.tau.exp(), batch_size=b)
        return loss

    # ------------------------------------------------------------------------------------------------ eval
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch)
        self._val_outputs.append((out.e_m.detach(), batch["index"]))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        emb, idx = self._collect_outputs()
        dm = self.trainer.datamodule
        metrics = self._recall(emb, idx, dm.val_pool_ids, dm.val_pairs)
        self.log_dict(metrics, sync_dist=False, rank_zero_only=False)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        """Recall@K over every pair file of the test split (all + subsets), pool = all test notes."""
        from notellm2_pl.retrieval.recall import evaluate_subsets, format_table

        emb, idx = self._collect_outputs()
        dm = self.trainer.datamodule
        ids, mat = self._dedupe(emb, idx, dm.pool_ids("test"))
        results = evaluate_subsets(mat, ids, dm.test_pair_sets(), ks=tuple(self.hparams.test_ks))
        self.test_results = results
        for subset, res in results.items():
            self.log_dict({f"test/{subset}/R@{k}": float(v) for k, v in res.recalls.items()}, rank_zero_only=True)
        if self.trainer.is_global_zero:
            print(format_table(results))

    def _collect_outputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        emb = torch.cat([e for e, _ in self._val_outputs])
        idx = torch.cat([i for _, i in self._val_outputs])
        self._val_outputs.clear()
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

    def _recall(self, emb: torch.Tensor, idx: torch.Tensor, pool_ids: list[str], pairs: list) -> dict[str, float]:
        from notellm2_pl.retrieval.recall import evaluate_pairs

        ids, mat = self._dedupe(emb, idx, pool_ids)
        res = evaluate_pairs(mat, ids, pairs, ks=tuple(self.hparams.val_ks))
        metrics = {f"val/R@{k}": float(v) for k, v in res.recalls.items()}
        metrics["val/recall"] = metrics[f"val/R@{self.hparams.val_ks[0]}"]
        metrics["val/chance@" + str(self.hparams.val_ks[0])] = min(1.0, self.hparams.val_ks[0] / max(1, res.pool_size))
        return metrics

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        out = self(batch)
        result = {"note_ids": batch["note_ids"], "e_m": out.e_m.float().cpu()}
        if out.e_v is not None:
            result["e_v"] = out.e_v.float().cpu()
        return result

    # ------------------------------------------------------------------------------------------------ optim
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: (pretrained | new parts) x (decay | no decay)."""
        hp = self.hparams
        lr_new = hp.lr_new if hp.lr_new is not None else hp.lr
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            pretrained = name.startswith(("encoder.llm.", "encoder.vision."))
            no_decay = hp.no_decay_norm_bias_tau and (p.ndim < 2 or "norm" in name.lower() or name == "tau")
            groups.setdefault((pretrained, no_decay), []).append(p)
        return [{"params": ps, "lr": hp.lr if pre else lr_new, "weight_decay": 0.0 if nd else hp.weight_decay}
                for (pre, nd), ps in groups.items()]

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.param_groups(), betas=(0.9, 0.999), eps=1e-8)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_ratio * total)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_lambda(s, total, warmup, self.hparams.warmup_type))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

