"""Retrieval: exact Recall@K evaluation, embedding files and FAISS top-k search.

- :mod:`~notellm2_pl.retrieval.pairs`: which pairs are evaluated (the at-most-once rule, short/long subsets);
- :mod:`~notellm2_pl.retrieval.ranking`: the exact, chunked rank of each query's target;
- :mod:`~notellm2_pl.retrieval.recall`: Recall@K and the whole protocol on embeddings (:class:`EvalResult`);
- :mod:`~notellm2_pl.retrieval.results`: result tables, JSON/CSV files and TensorBoard scalars;
- :mod:`~notellm2_pl.retrieval.evaluation`: the test pool of a dataset, probes, and reports of several runs;
- :mod:`~notellm2_pl.retrieval.prediction_writer`: embeddings directories (``predict`` writer and loader);
- :mod:`~notellm2_pl.retrieval.faiss_index` and :mod:`~notellm2_pl.retrieval.search`: FAISS indexes and neighbours.
- :mod:`~notellm2_pl.retrieval.live_index`: the live index of ``serve`` (LanceDB: upserts, deletes, filtered top-k).
"""
