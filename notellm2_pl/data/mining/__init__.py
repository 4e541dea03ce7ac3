"""Related-note pairs from behaviour logs, the NoteLLM way (co-occurrence), on DuckDB or Spark.

Modules: :mod:`.settings` (parameters with the paper's defaults, the stage report), :mod:`.query` (the mining query,
defined once as SQL), :mod:`.engines` (DuckDB, Spark), :mod:`.pipeline` (validate, mine, split: :func:`mine_pairs`),
:mod:`.writing` (the dataset folder), :mod:`.synthetic_logs` (behaviour logs over the synthetic benchmark and the
score of mined pairs against its planted relations). The ``mine-pairs`` command is
:mod:`notellm2_pl.commands.mine_pairs`. Definitions and defaults: docs/data.md#mining-pairs-from-behaviour-logs.
"""

from notellm2_pl.data.mining.engines import DuckDBEngine, SparkEngine, open_engine
from notellm2_pl.data.mining.pipeline import catalogue_tables, mine_pairs
from notellm2_pl.data.mining.settings import MiningConfig, MiningError, MiningReport, Stage

__all__ = ["DuckDBEngine", "MiningConfig", "MiningError", "MiningReport", "SparkEngine", "Stage", "catalogue_tables",
           "mine_pairs", "open_engine"]
