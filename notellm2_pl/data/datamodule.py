"""Datasets and the LightningDataModule: pairs for training, note pools for validation, test and predict."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader, Dataset

from notellm2_pl.data.tables import DataError, LoadReport, Note, OnError, Split, load_split
from notellm2_pl.data.processing import NoteProcessor, collate, collate_pairs
from notellm2_pl.data.prompts import Probe, TextLimits

log = logging.getLogger(__name__)


class PairDataset(Dataset):
    """Training pairs ``(query, target)`` processed into model inputs."""

    def __init__(self, pairs: list[tuple[str, str]], notes: dict[str, Note], processor: NoteProcessor) -> None:
        self.pairs, self.notes, self.processor = pairs, notes, processor

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        q, t = self.pairs[i]
        return self.processor(self.notes[q], train=True), self.processor(self.notes[t], train=True)


class NoteDataset(Dataset):
    """A list of notes (an evaluation pool); each item carries its position as ``index``."""

    def __init__(self, note_ids: list[str], notes: dict[str, Note], processor: NoteProcessor) -> None:
        self.note_ids, self.notes, self.processor = note_ids, notes, processor

    def __len__(self) -> int:
        return len(self.note_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.processor(self.notes[self.note_ids[i]], train=False)
        item["index"] = i
        return item


def collate_notes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate notes and keep their pool positions."""
    import torch

    batch = collate(items)
    batch["index"] = torch.tensor([it["index"] for it in items])
    return batch


def drop_bad_images(split: Split, report: LoadReport | None = None, workers: int = 8) -> None:
    """Skip-and-count mode: remove notes whose image is missing, undecodable or unconvertible, and their pairs.

    Problems are recorded in ``split.report`` (see :func:`notellm2_pl.data.validation.check_images`; issue 7).
    """
    from notellm2_pl.data.validation import check_images

    check_images(split, "skip", workers)
    if report is not None and report is not split.report:
        report.merge(split.report)


class NoteDataModule(L.LightningDataModule):
    """Notes + pairs in the canonical or the official NoteLLM layout (detected from the files present).

    The note format (tokenizer, image preprocessing, template) comes from the LightningModule being trained
    (``module.note_format()``), so it is never configured twice.

    Args:
        root: Dataset directory. Point a recipe at another dataset with ``--data.root DIR``.
        batch_size: Pairs per device per step (a step sees ``2 * batch_size`` notes per device).
        eval_batch_size: Notes per batch at validation / test / predict.
        num_workers: DataLoader workers.
        on_error: ``raise`` (default) or ``skip`` (skip and count) for bad rows and bad images; pairs naming an
            unknown note are always skipped and counted.
        title_chars: Title characters kept.
        content_chars: Content characters kept.
        max_tags: Topics kept.
        max_tokens: Token budget of the templated note before the suffix.
        train_flip: Random horizontal flip in training (the original used it; off by default so a frozen tower's
            features are deterministic).
        probe: Input probe for evaluation: ``full``, ``only_image`` or ``only_text``.
        val_pool_extra: Validation pool = the notes of the validation pairs plus this many other training notes
            (drawn with ``seed``); recall is computed over that pool.
        predict_split: Notes embedded by ``predict``: ``test`` (the test pool) or ``train``.
        seed: Seed of the validation-pool draw.
        short_max_chars: Without subset files, a query/target is short when its raw text (title + topics +
            content, before truncation) has at most this many characters.
        long_min_chars: ... and long when it has at least this many.
        check_images: Decode every image once at setup, so a bad file fails (or is skipped, with ``on_error=skip``)
            before training starts. For very large catalogues ``false`` defers decoding to the loader, where a bad
            image still raises a DataError naming the file (never a blank image); requires ``on_error=raise``.
        length_bucketing: Training batches of similar-length pairs, sorted within pools of this many batches of
            the shuffled order (0: off, the default; ``notellm2_pl.data.sampling.bucket_order``). Pads less, but similar-
            length notes then meet more often as in-batch negatives: measure on your data
            (``benchmarks/bench_padding.py``) before turning it on.
        synthetic: If set (e.g. ``{preset: demo}``) and ``root`` has no dataset, generate the synthetic benchmark
            there first.
    """

    def __init__(
        self,
        root: str = "data/synthetic",
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        on_error: OnError = "raise",
        title_chars: int = 20,
        content_chars: int = 80,
        max_tags: int = 10,
        max_tokens: int = 140,
        train_flip: bool = False,
        probe: Probe = "full",
        val_pool_extra: int = 1000,
        predict_split: Literal["test", "train"] = "test",
        seed: int = 42,
        short_max_chars: int = 30,
        long_min_chars: int = 100,
        check_images: bool = True,
        length_bucketing: int = 0,
        synthetic: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not check_images and on_error == "skip":
            raise ValueError("data.on_error skip needs data.check_images true (bad images are found and skipped at "
                             "setup); set one of them back.")
        self.save_hyperparameters()
        self.limits = TextLimits(title_chars, content_chars, max_tags)
        self.processor: NoteProcessor | None = None
        self.splits: dict[str, Split] = {}
        self._image_cache: dict = {}  # image path -> check result, shared by splits (issue 7)
        self.report = LoadReport()
        self.val_pairs: list[tuple[str, str]] = []
        self.val_pool_ids: list[str] = []

    def prepare_data(self) -> None:
        if self.hparams.synthetic is not None:
            import dataclasses

            from notellm2_pl.data.synthetic import PRESETS, ensure_dataset

            cfg = dict(self.hparams.synthetic)
            base = PRESETS[cfg.pop("preset", "demo")]
            ensure_dataset(self.hparams.root, dataclasses.replace(base, **cfg))

    def attach(self, module: Any) -> None:
        """Build the processor from the model's note format (done automatically in ``setup``)."""
        hp = self.hparams
        if hp.train_flip and getattr(module.hparams, "feature_cache", False):
            raise ValueError("The vision feature cache needs deterministic training transforms: set "
                             "--data.train_flip false, or --model.feature_cache false.")
        self.processor = NoteProcessor(module.note_format(), self.limits, hp.max_tokens, hp.probe, hp.train_flip)

    def _split(self, name: str) -> Split:
        if name not in self.splits:
            # issue 7: rows, pairs and (for models with a vision tower) images are checked here, at setup, so a
            # bad file fails before training starts (raise) or is skipped and counted (skip); never substituted.
            split = load_split(self.hparams.root, name, self.hparams.on_error, limits=self.limits)
            needs_images = self.processor is None or self.processor.fmt.image_config is not None
            if needs_images and self.hparams.check_images:
                from notellm2_pl.data.validation import check_images

                check_images(split, self.hparams.on_error, workers=8, cache=self._image_cache)
            for reason, n in split.report.counts.items():
                self.report.counts[f"{name}: {reason}"] += n
                self.report.examples[f"{name}: {reason}"] = list(split.report.examples.get(reason, []))
            self.splits[name] = split
            if not split.pairs.get("all"):
                raise DataError(f"The {name} split of {self.hparams.root} has no usable pairs "
                                f"({split.report.summary()}).")
        return self.splits[name]

    def setup(self, stage: str) -> None:
        if self.processor is None:
            if self.trainer is None or self.trainer.lightning_module is None:
                raise RuntimeError("NoteDataModule needs the model's note format: call dm.attach(module) first.")
            self.attach(self.trainer.lightning_module)
        if stage in ("fit", "validate"):
            train = self._split("train")
            self.val_pairs = self._split("val").pairs["all"]
            in_val = {n for p in self.val_pairs for n in p}
            others = sorted(set(train.notes) - in_val)
            random.Random(self.hparams.seed).shuffle(others)
            self.val_pool_ids = sorted(in_val) + others[: self.hparams.val_pool_extra]
        if stage in ("test", "predict"):
            self._split(self.hparams.predict_split if stage == "predict" else "test")
        if self.report.counts:
            log.warning("Data problems found (skipped or fixed, and counted): %s", self.report.summary())

    # ---------------------------------------------------------------------------------------------- loaders
    def _loader(self, ds: Dataset, shuffle: bool, collate_fn, batch_size: int, drop_last: bool) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn, drop_last=drop_last,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        split = self._split("train")
        ds = PairDataset(split.pairs["all"], split.notes, self.processor)
        # drop_last: every rank contributes the same number of notes to the gathered contrastive batch
        # issue 7: seeded shuffle whose position and RNG states are saved in checkpoints (exact mid-epoch resume)
        from notellm2_pl.data.sampling import resumable_loader

        nw, pool = self.hparams.num_workers, self.hparams.length_bucketing
        lengths = None
        if pool:  # exact token lengths (one tokenisation pass); a pair pads to its longer note
            size = {k: len(self.processor.tokenize(n)[0]) for k, n in split.notes.items()}
            lengths = [max(size[q], size[t]) for q, t in split.pairs["all"]]
        return resumable_loader(ds, self.trainer, self.hparams.batch_size, self.hparams.seed, lengths=lengths,
                                bucket_pool=pool, collate_fn=collate_pairs, drop_last=True, num_workers=nw,
                                persistent_workers=nw > 0)

    def val_dataloader(self) -> DataLoader:
        ds = NoteDataset(self.val_pool_ids, self._split("train").notes, self.processor)
        return self._loader(ds, False, collate_notes, self.hparams.eval_batch_size, drop_last=False)

    def pool_ids(self, split: str) -> list[str]:
        """The evaluation pool of a split: all its notes, sorted (fixes R5's set-ordered pool)."""
        return sorted(self._split(split).notes)

    def test_pair_sets(self) -> dict[str, list[tuple[str, str]]]:
        """Pair sets of the test split: ``all`` plus the subset files, or subsets derived from raw text length."""
        from notellm2_pl.retrieval.recall import derive_subsets

        split = self._split("test")
        if len(split.pairs) > 1:
            return dict(split.pairs)
        hp = self.hparams
        derived = derive_subsets(split.pairs["all"], text_lengths(split.notes), hp.short_max_chars, hp.long_min_chars)
        return {"all": split.pairs["all"], **derived}

    def test_dataloader(self) -> DataLoader:
        ds = NoteDataset(self.pool_ids("test"), self._split("test").notes, self.processor)
        return self._loader(ds, False, collate_notes, self.hparams.eval_batch_size, drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        split = self.hparams.predict_split
        ds = NoteDataset(self.pool_ids(split), self._split(split).notes, self.processor)
        return self._loader(ds, False, collate_notes, self.hparams.eval_batch_size, drop_last=False)


def text_lengths(notes: dict[str, Note]) -> dict[str, int]:
    """Raw text length of every note (before truncation), for the short/long subset rule."""
    return {k: n.raw_len for k, n in notes.items()}


def resolve_root(root: str | Path) -> Path:
    """Absolute dataset root."""
    return Path(root).expanduser().resolve()
