"""Streaming data for catalogues that do not fit in memory, on Lightning's streaming library ``litdata``.

``python -m notellm2_pl prepare ROOT OUT`` (:func:`notellm2_pl.data.streaming.prepare.prepare`) writes a dataset
(either layout :func:`~notellm2_pl.data.tables.load_split` reads) into litdata optimized chunks under ``OUT`` (a
folder or an object-store URL such as ``s3://bucket/prefix``)::

    OUT/streaming.json           manifest: format, source, counts, pair sets, the prepare settings
    OUT/notes_train/             one item per train note (train and val pools), sorted by note id
    OUT/notes_test/              one item per test note (the test pool), sorted by note id
    OUT/ids_{train,test}/        note id and raw text length per note, same order (evaluation pools, subsets)
    OUT/train_pairs/             one item per training pair: both notes whole (text fields and image bytes)
    OUT/pairs_val/, OUT/pairs_test/, OUT/pairs_test_<subset>/   query_id, target_id per pair

A training pair carries both of its notes, so training reads the chunks sequentially (what object storage serves
well) at the price of storing a note once per pair it is in. The recipe switch ``data.streaming: OUT`` on
:class:`~notellm2_pl.data.datamodule.NoteDataModule` trains, validates, tests and predicts from them
(:class:`~notellm2_pl.data.streaming.source.StreamSource`); docs/data.md ("Streaming data") has the details.
"""

import os

# Set before litdata is imported (every submodule of this package imports it): building a litdata dataset
# otherwise asks PyPI for a newer litdata version (a network call, up to 30 s offline).
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
