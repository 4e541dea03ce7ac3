"""Inference: from a recipe, a checkpoint or an export to embeddings.

- :mod:`~notellm2_pl.inference.factory`: build the ``NoteLLM2Module`` of a recipe, a checkpoint or resolved config
  dicts (the LightningCLI schema, ``model`` and ``data`` sections);
- :mod:`~notellm2_pl.inference.export`: write a trained model to one self-contained directory and load it back;
- :mod:`~notellm2_pl.inference.embedder`: :class:`~notellm2_pl.inference.embedder.Embedder`, the Python embedding
  API (also ``from notellm2_pl import Embedder``);
- :mod:`~notellm2_pl.inference.serving` (with :mod:`~notellm2_pl.inference.serving_http` and
  :mod:`~notellm2_pl.inference.note_requests`): the ``serve`` HTTP endpoint on LitServe (docs/serving.md).
"""
