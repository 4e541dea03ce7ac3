"""The LightningDataModule: loads and checks a dataset, and serves training pairs and evaluation pools."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
from torch.utils.data import DataLoader, Dataset

from notellm2_pl.data.problems import DataError, LoadReport, OnError
from notellm2_pl.data.processing import NoteProcessor, collate_pairs
from notellm2_pl.data.prompts import TextLimits
from notellm2_pl.data.sampling import resumable_loader, trainer_progress
from notellm2_pl.data.schema import ALL_PAIRS, Probe
from notellm2_pl.data.synthetic import ensure_dataset, preset_config
from notellm2_pl.data.tables import Note, Split, load_split
from notellm2_pl.data.torch_datasets import NoteDataset, PairDataset, collate_notes
from notellm2_pl.data.truncation import warn_if_truncating
from notellm2_pl.data.val_split import (
    SeenNotes,
    ValSplit,
    carve_note_disjoint,
    draw_val_pool,
    measure_seen,
    pair_notes,
    resolve_val_split,
    validation_notice,
)
from notellm2_pl.data.validation import check_images
from notellm2_pl.retrieval.pairs import derive_subsets

if TYPE_CHECKING:
    from notellm2_pl.data.streaming.source import StreamSource
    from notellm2_pl.training.module import NoteLLM2Module

log = logging.getLogger(__name__)

TRUNCATION_SAMPLE = 2000
"""Training notes whose prompt length ``fit`` checks against ``data.max_tokens`` (the first ones, by id order)."""


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
            (drawn with ``seed``); recall is computed over that pool. Under a carved split (``val_split``), the
            held-out notes plus this many train-table notes in no remaining training pair (drawn with ``val_seed``).
        predict_split: Notes embedded by ``predict``: ``test`` (the test pool) or ``train``.
        seed: Seed of the training shuffle and of the validation-pool draw of ``given`` validation.
        short_max_chars: Without subset files, a query/target is short when its raw text (title + topics +
            content, before truncation) has at most this many characters.
        long_min_chars: ... and long when it has at least this many.
        check_images: Decode every image once at setup, so a bad file fails (or is skipped, with ``on_error=skip``)
            before training starts. For very large catalogues ``false`` defers decoding to the loader, where a bad
            image still raises a DataError naming the file (never a blank image); requires ``on_error=raise``.
        length_bucketing: Training batches of similar-length pairs, sorted within pools of this many batches of
            the shuffled order (0: off, the default; ``notellm2_pl.data.sampling.bucket_order``). Pads less, but
            similar-length notes then meet more often as in-batch negatives: measure on your data
            (``benchmarks/bench_padding.py``) before turning it on.
        synthetic: If set (e.g. ``{preset: demo}``) and ``root`` has no dataset, generate the synthetic benchmark
            there first.
        streaming: Serve the data from litdata optimized chunks written by ``python -m notellm2_pl prepare ROOT
            OUT`` (a folder or an object-store URL) instead of loading ``root`` into memory: for catalogues that do
            not fit (docs/data.md, "Streaming data"). Evaluation batches are those of the in-memory path; training
            takes litdata's shuffle (the same pairs per epoch, another order). None: the in-memory path.
        streaming_cache: Local folder where litdata caches the chunks of a ``streaming`` URL (None: its default).
        val_split: Which validation pairs ``fit`` and ``validate`` use (docs/data.md#validation-on-unseen-notes):
            ``given`` (the dataset's validation pairs), ``note_disjoint`` (hold ``val_note_fraction`` of the training
            notes out of training, whole connected components of the training-pair graph where they fit; the pairs
            among them are the validation pairs, and every training pair touching them is dropped) or ``auto``
            (default): ``note_disjoint`` when the test is cold-start and the given validation pairs share notes with
            training, else ``given``. With ``streaming``, ``auto`` keeps the given pairs.
        val_note_fraction: Share of the training-pair notes a carved split holds out.
        val_seed: Seed of the carved split and of its pool's extra notes (independent of ``seed``, so runs that vary
            the data order validate on the same notes).
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
        streaming: str | None = None,
        streaming_cache: str | None = None,
        val_split: ValSplit = "auto",
        val_note_fraction: float = 0.15,
        val_seed: int = 0,
    ) -> None:
        super().__init__()
        if not check_images and on_error == "skip":
            raise ValueError("data.on_error skip needs data.check_images true (bad images are found and skipped at "
                             "setup); set one of them back.")
        resolve_val_split(val_split, None)  # an unknown value fails here, before any loading
        if streaming and val_split == "note_disjoint":
            raise ValueError("data.val_split note_disjoint needs the in-memory path (streamed training pairs are fixed "
                             "at prepare): set --data.val_split given with data.streaming.")
        self.save_hyperparameters()
        self.limits = TextLimits(title_chars, content_chars, max_tags)
        self.processor: NoteProcessor | None = None
        self.splits: dict[str, Split] = {}
        self._image_cache: dict[str | None, tuple[str | None, str]] = {}  # image path -> check, shared by splits
        self.report = LoadReport()
        self.val_pairs: list[tuple[str, str]] = []
        self.val_pool_ids: list[str] = []
        self._val_positions: list[int] = []  # streaming: the pool's positions in the prepared train notes
        self._stream: StreamSource | None = None
        self.val_split_used: str | None = None  # given or note_disjoint, once set up
        self.seen_notes: SeenNotes | None = None  # validation/test notes that appear in training pairs

    def prepare_data(self) -> None:
        if self.hparams.synthetic is not None:
            cfg = dict(self.hparams.synthetic)
            ensure_dataset(self.hparams.root, preset_config(cfg.pop("preset", "demo"), **cfg))

    def attach(self, module: NoteLLM2Module) -> None:
        """Build the processor from the model's note format (done automatically in ``setup``)."""
        hp = self.hparams
        if hp.train_flip and module.encoder.config.feature_cache:
            raise ValueError("The vision feature cache needs deterministic training transforms: set "
                             "--data.train_flip false, or --model.encoder.feature_cache false.")
        self.processor = NoteProcessor(module.note_format(), self.limits, hp.max_tokens, hp.probe, hp.train_flip)

    @property
    def stream(self) -> StreamSource | None:
        """The prepared streaming data (``streaming`` set), else None."""
        if self._stream is None and self.hparams.streaming:
            from notellm2_pl.data.streaming.source import StreamSource  # optional dependency: litdata

            self._stream = StreamSource(self.hparams.streaming, self.hparams.streaming_cache)
        return self._stream

    def _split(self, name: str) -> Split:
        if name not in self.splits:
            # Rows, pairs and (for models with a vision tower) images are checked here, at setup, so a bad file
            # fails before training starts (raise) or is skipped and counted (skip); never substituted.
            split = load_split(self.hparams.root, name, self.hparams.on_error, limits=self.limits)
            needs_images = self.processor is None or self.processor.fmt.image_config is not None
            if needs_images and self.hparams.check_images:
                check_images(split, self.hparams.on_error, workers=8, cache=self._image_cache)
            for reason, n in split.report.counts.items():
                self.report.counts[f"{name}: {reason}"] += n
                self.report.examples[f"{name}: {reason}"] = list(split.report.examples.get(reason, []))
            self.splits[name] = split
            if not split.pairs.get(ALL_PAIRS):
                raise DataError(f"The {name} split of {self.hparams.root} has no usable pairs "
                                f"({split.report.summary()}).")
        return self.splits[name]

    def setup(self, stage: str) -> None:
        if self.processor is None:
            if self.trainer is None or self.trainer.lightning_module is None:
                raise RuntimeError("NoteDataModule needs the model's note format: call dm.attach(module) first.")
            self.attach(self.trainer.lightning_module)
        if self.stream is not None:
            if stage in ("fit", "validate"):
                self.val_split_used = "given"
                self.val_pairs = self.stream.pair_sets("val")[ALL_PAIRS]
                self.val_pool_ids, self._val_positions = self.stream.val_pool(self.val_pairs,
                                                                              self.hparams.val_pool_extra,
                                                                              self.hparams.seed)
            return
        if stage in ("fit", "validate"):
            train = self._split("train")
            if stage == "fit":
                warn_if_truncating(self.processor, list(train.notes.values())[:TRUNCATION_SAMPLE])
            self._setup_validation(train)
        if stage in ("test", "predict"):
            self._split(self.hparams.predict_split if stage == "predict" else "test")
        if self.report.counts:
            log.warning("Data problems found (skipped or fixed, and counted): %s", self.report.summary())

    def _setup_validation(self, train: Split) -> None:
        """Validation pairs and pool: the given ones, or a note-disjoint split carved from the training pairs
        (``val_split``). Done once; under a carve the train split's ``all`` pairs become the pairs training keeps."""
        if self.val_split_used is not None:
            return
        hp = self.hparams
        given = self._split("val").pairs[ALL_PAIRS]
        self.seen_notes = measure_seen(train.pairs[ALL_PAIRS], given, *self._test_ids())
        self.val_split_used = resolve_val_split(hp.val_split, self.seen_notes)
        carved = None
        if self.val_split_used == "given":
            self.val_pairs = given
            self.val_pool_ids = draw_val_pool(pair_notes(given), train.notes, hp.val_pool_extra, hp.seed)
        else:
            carved = carve_note_disjoint(train.pairs[ALL_PAIRS], hp.val_note_fraction, hp.val_seed)
            train.pairs[ALL_PAIRS] = carved.train_pairs  # every reader of the training pairs sees what training keeps
            unseen = set(train.notes) - pair_notes(carved.train_pairs)
            self.val_pairs = carved.val_pairs
            self.val_pool_ids = draw_val_pool(carved.val_notes, unseen, hp.val_pool_extra, hp.val_seed)
        notice = validation_notice(hp.val_split, self.val_split_used, self.seen_notes, carved)
        if notice is not None:
            log.log(*notice)

    def _test_ids(self) -> tuple[list[tuple[str, str]] | None, list[str] | None]:
        """(test pairs, test pool ids) for measuring the overlap with training; (None, None) when unreadable."""
        split = self.splits.get("test")
        if split is None:
            try:  # ids only: rows are checked (and images decoded) when the test split is set up
                split = load_split(self.hparams.root, "test", "skip")
            except DataError:
                return None, None
        return split.pairs.get(ALL_PAIRS, []), list(split.notes)

    # ---------------------------------------------------------------------------------------------- loaders
    def _loader(self, ds: Dataset, shuffle: bool, collate_fn: Callable[[list[Any]], Any], batch_size: int,
                drop_last: bool) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn, drop_last=drop_last,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        if self.stream is not None:
            return self._stream_train_loader()
        split = self._split("train")
        ds = PairDataset(split.pairs[ALL_PAIRS], split.notes, self.processor)
        # drop_last: every rank contributes the same number of notes to the gathered contrastive batch.
        # Seeded shuffle whose position and RNG states are saved in checkpoints (exact mid-epoch resume).
        nw, pool = self.hparams.num_workers, self.hparams.length_bucketing
        lengths = None
        if pool:  # exact token lengths (one tokenisation pass); a pair pads to its longer note
            size = {k: len(self.processor.tokenize(n)[0]) for k, n in split.notes.items()}
            lengths = [max(size[q], size[t]) for q, t in split.pairs[ALL_PAIRS]]
        return resumable_loader(ds, self.trainer, self.hparams.batch_size, self.hparams.seed, lengths=lengths,
                                bucket_pool=pool, collate_fn=collate_pairs, drop_last=True, num_workers=nw,
                                persistent_workers=nw > 0)

    def _stream_train_loader(self) -> DataLoader:
        """Training pairs streamed by litdata (sharded by rank and worker, resumable mid-epoch)."""
        hp = self.hparams
        if hp.length_bucketing:
            raise ValueError("data.length_bucketing needs the in-memory path (it sorts the whole epoch); set it to 0 "
                             "with data.streaming.")
        self._check_no_feature_store()
        progress = trainer_progress(self.trainer) if self.trainer is not None else None
        return self.stream.train_loader(self.processor, hp.batch_size, hp.seed, progress=progress,
                                        num_workers=hp.num_workers)

    def _check_no_feature_store(self) -> None:
        if self.processor.fmt.feature_store is not None:
            raise ValueError("The on-disk feature store keys images by their file (path, size, mtime), which prepared "
                             "streaming data does not keep: with data.streaming set "
                             "--model.encoder.feature_cache_dir null (the in-memory feature cache still works).")

    def _pool(self, split: str) -> Dataset:
        """The evaluation pool of ``val``, ``test`` or ``train`` as a dataset of processed notes."""
        if self.stream is not None:
            self._check_no_feature_store()
            positions = self._val_positions if split == "val" else None
            return self.stream.notes_dataset(split, self.processor, positions)
        if split == "val":
            return NoteDataset(self.val_pool_ids, self._split("train").notes, self.processor)
        return NoteDataset(self.pool_ids(split), self._split(split).notes, self.processor)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._pool("val"), False, collate_notes, self.hparams.eval_batch_size, drop_last=False)

    def pool_ids(self, split: str) -> list[str]:
        """The evaluation pool of a split: all its notes, sorted by id (a deterministic order on every run)."""
        if self.stream is not None:
            return list(self.stream.pool_ids(split))
        return sorted(self._split(split).notes)

    def test_pair_sets(self) -> dict[str, list[tuple[str, str]]]:
        """Pair sets of the test split: ``all`` plus the subset files, or subsets derived from raw text length."""
        sets = self.stream.pair_sets("test") if self.stream is not None else dict(self._split("test").pairs)
        if len(sets) > 1:
            return sets
        hp = self.hparams
        pairs = sets[ALL_PAIRS]
        stream = self.stream
        lengths = stream.raw_lengths("test") if stream is not None else text_lengths(self._split("test").notes)
        return {ALL_PAIRS: pairs, **derive_subsets(pairs, lengths, hp.short_max_chars, hp.long_min_chars)}

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._pool("test"), False, collate_notes, self.hparams.eval_batch_size, drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._pool(self.hparams.predict_split), False, collate_notes,
                            self.hparams.eval_batch_size, drop_last=False)


def text_lengths(notes: dict[str, Note]) -> dict[str, int]:
    """Raw text length of every note (before truncation), for the short/long subset rule."""
    return {k: n.raw_len for k, n in notes.items()}
