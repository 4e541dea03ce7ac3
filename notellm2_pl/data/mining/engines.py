"""The two engines that run the mining query of :mod:`notellm2_pl.data.mining.query`: DuckDB and Spark.

An engine reads the log and the catalogue into the tables the query expects, materialises each stage under its
name, and answers counts and row streams. Nothing else differs: the SQL text is the same for both.

* :class:`DuckDBEngine` (default): in-process, out of core: ``memory_limit`` bounds its memory and it spills to
  ``temp_directory`` beyond it.
* :class:`SparkEngine`: pyspark, ``local[N]`` on one machine or a cluster URL (``spark://host:7077``,
  ``yarn``, ``k8s://...``). The driver only receives counts and the final pairs.

duckdb and pyspark are imported inside the engines: each is optional and heavy, and only the one chosen is needed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from notellm2_pl.data.mining.query import DUCKDB, SPARK, Dialect
from notellm2_pl.data.mining.settings import MiningError

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import DataFrame, SparkSession

LOG_COLUMNS: tuple[str, ...] = ("user_id", "note_id", "timestamp")
"""Required columns of a behaviour log; ``action`` is optional."""

CATALOGUE_COLUMNS: tuple[str, ...] = ("note_id", "title", "topics", "content", "image")
"""Columns the engines read from a canonical notes table."""


def table_format(path: Path) -> str:
    """``csv``, ``parquet`` or ``jsonl`` from a file's extension (a folder: the extension of the files in it)."""
    probe = path
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
        if not files:
            raise MiningError(f"{path} holds no table files")
        probe = files[0]
    suffix = probe.suffix.lower()
    kinds = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}
    if suffix not in kinds:
        raise MiningError(f"cannot tell the format of {probe} (use .csv, .parquet or .jsonl)")
    return kinds[suffix]


class Engine(Protocol):
    """What the mining pipeline needs from an engine."""

    dialect: Dialect

    def load_log(self, path: Path) -> None:
        """Register ``raw_events(user_id, note_id, ts_text, action, row_no)`` from a log file or folder."""

    def load_catalogue(self, tables: list[Path]) -> None:
        """Register ``catalogue(note_id, title, topics, content, image)`` and ``catalogue_ids(note_id)``."""

    def create(self, name: str, sql: str) -> None:
        """Materialise ``sql`` as table ``name``."""

    def scalar(self, sql: str) -> Any:
        """The first column of the first row of ``sql``."""

    def rows(self, sql: str) -> Iterator[tuple]:
        """Stream the rows of ``sql`` (bounded memory)."""

    def write_csv(self, sql: str, path: Path) -> int:
        """Write the rows of ``sql`` to a CSV file with a header; return the number of rows."""

    def close(self) -> None:
        """Release the engine."""


def write_rows(path: Path, header: Iterable[str], rows: Iterable[Iterable[object]]) -> int:
    """Write a CSV file with a header row; return the number of data rows."""
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(list(header))
        for row in rows:
            w.writerow(row)
            n += 1
    return n


def _missing(columns: list[str], path: Path) -> None:
    lower = [c.lower() for c in columns]
    absent = [c for c in LOG_COLUMNS if c not in lower]
    if absent:
        raise MiningError(f"{path}: missing column(s) {', '.join(absent)} (a log needs user_id, note_id, timestamp "
                          f"and optionally action; found {', '.join(columns)})")


class DuckDBEngine:
    """DuckDB in process, bounded by ``memory_limit`` and spilling to ``temp_directory``.

    Args:
        memory_limit: DuckDB memory limit, e.g. ``"2GB"``.
        temp_directory: Where DuckDB spills; default: its own ``.tmp`` folder.
        threads: Worker threads (default: DuckDB's choice, all cores).
    """

    dialect = DUCKDB

    def __init__(self, memory_limit: str = "2GB", temp_directory: str | None = None, threads: int | None = None):
        import duckdb  # optional dependency, imported only when this engine is chosen

        self.con: duckdb.DuckDBPyConnection = duckdb.connect()
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        if temp_directory:
            Path(temp_directory).mkdir(parents=True, exist_ok=True)
            self.con.execute(f"SET temp_directory = '{temp_directory}'")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        # Order matters only where rows are numbered in file order (the two loads below); every later stage orders
        # explicitly, and not preserving insertion order lets DuckDB parallelise and stream the joins and copies.
        self.con.execute("SET preserve_insertion_order = false")

    @contextmanager
    def _file_order(self) -> Iterator[None]:
        """Within the block, scans keep file order (``ROW_NUMBER() OVER ()`` numbers rows as the file lists them)."""
        self.con.execute("SET preserve_insertion_order = true")
        try:
            yield
        finally:
            self.con.execute("SET preserve_insertion_order = false")

    def _reader(self, path: Path, kind: str) -> str:
        src = str(path / "**" / f"*.{'parquet' if kind == 'parquet' else kind}") if path.is_dir() else str(path)
        if kind == "csv":
            return f"read_csv('{src}', header = true, all_varchar = true)"
        if kind == "parquet":
            return f"read_parquet('{src}')"
        return f"read_json('{src}', format = 'newline_delimited')"

    def load_log(self, path: Path) -> None:
        """Register ``raw_events`` (every column as text, ``row_no`` in file order)."""
        src = self._reader(path, table_format(path))
        cols = [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
        _missing(cols, path)
        action = "CAST(action AS VARCHAR)" if "action" in [c.lower() for c in cols] else "CAST(NULL AS VARCHAR)"
        with self._file_order():
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE raw_events AS SELECT CAST(user_id AS VARCHAR) AS user_id, "
                f"CAST(note_id AS VARCHAR) AS note_id, CAST(\"timestamp\" AS VARCHAR) AS ts_text, {action} AS action, "
                f"ROW_NUMBER() OVER () AS row_no FROM {src}")

    def load_catalogue(self, tables: list[Path]) -> None:
        """Register ``catalogue`` (the union of the tables, first occurrence of an id wins) and ``catalogue_ids``."""
        parts = []
        for i, path in enumerate(tables):
            src = self._reader(path, table_format(path))
            types = {r[0]: r[1] for r in self.con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
            if "note_id" not in types:
                raise MiningError(f"{path}: no note_id column (a catalogue is a canonical notes table)")
            cols = []
            for c in CATALOGUE_COLUMNS:
                if c not in types:
                    cols.append(f"CAST(NULL AS VARCHAR) AS {c}")
                elif types[c].endswith("[]"):
                    cols.append(f"array_to_string({c}, '|') AS {c}")
                else:
                    cols.append(f"CAST({c} AS VARCHAR) AS {c}")
            parts.append(f"SELECT {', '.join(cols)}, {i} AS src, ROW_NUMBER() OVER () AS row_no FROM {src}")
        union = " UNION ALL ".join(parts)
        with self._file_order():
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE catalogue AS SELECT {', '.join(CATALOGUE_COLUMNS)} FROM "
                             f"(SELECT *, ROW_NUMBER() OVER (PARTITION BY note_id ORDER BY src, row_no) AS k FROM "
                             f"({union}) u WHERE note_id IS NOT NULL) c WHERE k = 1")
        self.con.execute("CREATE OR REPLACE TEMP TABLE catalogue_ids AS SELECT note_id FROM catalogue")

    def create(self, name: str, sql: str) -> None:
        """Materialise ``sql`` as temp table ``name``."""
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def scalar(self, sql: str) -> Any:
        """First value of ``sql``."""
        row = self.con.execute(sql).fetchone()
        return None if row is None else row[0]

    def rows(self, sql: str) -> Iterator[tuple]:
        """Rows of ``sql`` in batches of 100 000."""
        cur = self.con.execute(sql)
        while True:
            batch = cur.fetchmany(100_000)
            if not batch:
                return
            yield from batch

    def write_csv(self, sql: str, path: Path) -> int:
        """``COPY (sql) TO path`` (CSV with a header), written by DuckDB itself."""
        target = str(path).replace("'", "''")
        row = self.con.execute(f"COPY ({sql}) TO '{target}' (FORMAT csv, HEADER true, DELIMITER ',')").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the connection."""
        self.con.close()


class SparkEngine:
    """Spark SQL through pyspark: ``local[N]`` on this machine or a cluster master URL.

    Args:
        master: Spark master, e.g. ``local[2]`` or ``spark://host:7077``.
        conf: Extra Spark settings (``spark.executor.memory``...).
    """

    dialect = SPARK

    def __init__(self, master: str = "local[2]", conf: dict[str, str] | None = None):
        from pyspark.sql import SparkSession  # optional dependency, imported only when this engine is chosen

        builder = (SparkSession.builder.master(master).appName("notellm2-mine-pairs")
                   .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.shuffle.partitions", "8" if master.startswith("local") else "200"))
        for k, v in (conf or {}).items():
            builder = builder.config(k, v)
        self.spark: SparkSession = builder.getOrCreate()
        self.spark.sparkContext.setLogLevel("ERROR")
        self._cached: list[DataFrame] = []

    def _read(self, path: Path) -> DataFrame:
        kind = table_format(path)
        reader = self.spark.read
        if kind == "csv":
            return reader.option("header", True).option("recursiveFileLookup", True).csv(str(path))
        if kind == "parquet":
            return reader.option("recursiveFileLookup", True).parquet(str(path))
        return reader.json(str(path))

    def load_log(self, path: Path) -> None:
        """Register ``raw_events`` (every column as text, ``row_no`` in file order)."""
        from pyspark.sql import functions as F

        df = self._read(path)
        _missing(df.columns, path)
        action = F.col("action").cast("string") if "action" in df.columns else F.lit(None).cast("string")
        df = df.select(F.col("user_id").cast("string").alias("user_id"), F.col("note_id").cast("string")
                       .alias("note_id"), F.col("timestamp").cast("string").alias("ts_text"), action.alias("action"),
                       F.monotonically_increasing_id().alias("row_no"))
        df.createOrReplaceTempView("raw_events")

    def load_catalogue(self, tables: list[Path]) -> None:
        """Register ``catalogue`` (first occurrence of an id wins) and ``catalogue_ids``."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import ArrayType

        frames = []
        for i, path in enumerate(tables):
            df = self._read(path)
            if "note_id" not in df.columns:
                raise MiningError(f"{path}: no note_id column (a catalogue is a canonical notes table)")
            cols = []
            for c in CATALOGUE_COLUMNS:
                if c not in df.columns:
                    cols.append(F.lit(None).cast("string").alias(c))
                elif isinstance(df.schema[c].dataType, ArrayType):
                    cols.append(F.concat_ws("|", F.col(c)).alias(c))
                else:
                    cols.append(F.col(c).cast("string").alias(c))
            frames.append(df.select(*cols, F.lit(i).alias("src"), F.monotonically_increasing_id().alias("row_no")))
        union = frames[0]
        for f in frames[1:]:
            union = union.unionByName(f)
        union.createOrReplaceTempView("catalogue_union")
        self.create("catalogue", f"SELECT {', '.join(CATALOGUE_COLUMNS)} FROM (SELECT *, ROW_NUMBER() OVER "
                                 "(PARTITION BY note_id ORDER BY src, row_no) AS k FROM catalogue_union "
                                 "WHERE note_id IS NOT NULL) c WHERE k = 1")
        self.create("catalogue_ids", "SELECT note_id FROM catalogue")

    def create(self, name: str, sql: str) -> None:
        """Compute ``sql``, keep it on the executors (a local checkpoint cuts the plan's lineage, so later stages
        do not re-plan every earlier one) and register it as temp view ``name``."""
        df = self.spark.sql(sql).localCheckpoint(eager=True)
        self._cached.append(df)
        df.createOrReplaceTempView(name)

    def scalar(self, sql: str) -> Any:
        """First value of ``sql``."""
        row = self.spark.sql(sql).first()
        return None if row is None else row[0]

    def rows(self, sql: str) -> Iterator[tuple]:
        """Rows of ``sql``, streamed partition by partition to the driver."""
        for row in self.spark.sql(sql).toLocalIterator():
            yield tuple(row)

    def write_csv(self, sql: str, path: Path) -> int:
        """Stream the rows of ``sql`` to one CSV file on the driver (the output folder is local)."""
        df = self.spark.sql(sql)
        return write_rows(path, df.columns, (tuple(r) for r in df.toLocalIterator()))

    def close(self) -> None:
        """Unpersist what this engine cached (the session stays for reuse in the same process)."""
        for df in self._cached:
            df.unpersist()
        self._cached.clear()


def open_engine(name: str, memory_limit: str = "2GB", temp_directory: str | None = None, threads: int | None = None,
                spark_master: str = "local[2]", spark_conf: dict[str, str] | None = None) -> Engine:
    """Start the engine called ``name`` (``duckdb`` or ``spark``).

    Args:
        name: ``duckdb`` (default engine) or ``spark``.
        memory_limit: DuckDB's memory limit.
        temp_directory: DuckDB's spill folder.
        threads: DuckDB threads.
        spark_master: Spark master URL.
        spark_conf: Extra Spark settings.

    Returns:
        The engine.

    Raises:
        MiningError: Unknown engine, or its package is not installed.
    """
    try:
        if name == "duckdb":
            return DuckDBEngine(memory_limit, temp_directory, threads)
        if name == "spark":
            return SparkEngine(spark_master, spark_conf)
    except ImportError as err:
        extra = "duckdb" if name == "duckdb" else "pyspark"
        raise MiningError(f"engine {name!r} needs `pip install {extra}` ({err})") from err
    raise MiningError(f"unknown engine {name!r}; use duckdb or spark")
