"""Behaviour logs over the synthetic benchmark, and the score of mined pairs against its planted relations.

Given a folder made by ``python -m notellm2_pl synth`` (its ``notes_meta.csv`` holds each note's latent cluster
and split), :func:`generate_logs` draws users with tastes over the planted clusters, sessions, popular notes and
noise clicks; :func:`score_pairs` measures mined pairs against the planted truth (two notes are related iff they
share a cluster). Generation is vectorised (numpy), so logs of tens of millions of events take seconds.

The log's time line matches the miner's default periods: train-split clusters are published at the start (a
``val_cluster_fraction`` of them only when the val period starts, at 70% of the span), test-split clusters when the
test period starts (80%). A user only meets published notes, so val and test behaviour is about new notes: the
cold-start case.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from notellm2_pl.data.mining.settings import MiningError

EPOCH0 = 1_700_000_000
"""Time of the first possible event (epoch seconds)."""


@dataclass(frozen=True)
class LogConfig:
    """Settings of the synthetic behaviour log.

    Attributes:
        num_users: Users.
        sessions_per_user: Mean sessions per user (Poisson, at least 1).
        events_per_session: Mean events per session (1 + Poisson).
        taste_clusters: Favourite clusters per user in each cohort (old, val-period and test-period clusters).
        popular_notes: Number of globally popular notes (from the oldest clusters).
        popular_prob: Chance that an event is a popular note.
        noise_prob: Chance that an event is a random published note.
        click_prob: Chance that an event is a click (else a view).
        days: Time span of the log.
        val_cluster_fraction: Share of train-split clusters published when the val period starts.
        seed: Random seed.
    """

    num_users: int = 2000
    sessions_per_user: float = 4.0
    events_per_session: float = 6.0
    taste_clusters: int = 3
    popular_notes: int = 20
    popular_prob: float = 0.05
    noise_prob: float = 0.1
    click_prob: float = 0.6
    days: float = 14.0
    val_cluster_fraction: float = 0.15
    seed: int = 0


VAL_START, TEST_START = 0.7, 0.8
"""Period starts as fractions of the span (the miner's defaults: val 10%, test 20% of the span)."""


@dataclass
class Planted:
    """The planted structure of a synthetic dataset: each note's cluster and cohort (0 old, 1 val, 2 test)."""

    note_ids: np.ndarray
    cluster: np.ndarray
    cohort_of_cluster: np.ndarray


def read_planted(dataset: str | Path, val_cluster_fraction: float = 0.15, seed: int = 0) -> Planted:
    """Read ``notes_meta.csv`` of a synthetic dataset and assign each cluster its cohort (publication period)."""
    path = Path(dataset) / "notes_meta.csv"
    if not path.exists():
        raise MiningError(f"{path} not found: pass a folder made by `python -m notellm2_pl synth`")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(r["note_id"], int(r["cluster_id"]), r["split"]) for r in csv.DictReader(f)]
    ids = np.array([r[0] for r in rows])
    cluster = np.array([r[1] for r in rows])
    cohort = np.zeros(int(cluster.max()) + 1, dtype=np.int64)
    for _, c, split in rows:
        cohort[c] = 2 if split == "test" else 0
    rng = np.random.default_rng(seed)
    old = np.flatnonzero(cohort == 0)
    cohort[rng.choice(old, size=round(val_cluster_fraction * len(old)), replace=False)] = 1
    return Planted(ids, cluster, cohort)


def _sessions(rng: np.random.Generator, cfg: LogConfig, users: np.ndarray) -> tuple[np.ndarray, ...]:
    """(user, start time in [0, 1) of the span, number of events) per session of ``users``."""
    per_user = np.maximum(1, rng.poisson(cfg.sessions_per_user, len(users)))
    user = np.repeat(users, per_user)
    start = rng.random(len(user))
    n_events = 1 + rng.poisson(max(cfg.events_per_session - 1, 0), len(user))
    return user, start, n_events


def _session_clusters(rng: np.random.Generator, cfg: LogConfig, planted: Planted, user: np.ndarray,
                      start: np.ndarray) -> np.ndarray:
    """A taste cluster per session, among the cohorts already published at the session's start."""
    by_cohort = [np.flatnonzero(planted.cohort_of_cluster == k) for k in range(3)]
    by_cohort = [c if len(c) else by_cohort[0] for c in by_cohort]
    first = int(user.min()) if len(user) else 0
    n_users = int(user.max()) + 1 - first if len(user) else 0
    tastes = np.stack([rng.choice(c, size=(n_users, cfg.taste_clusters)) for c in by_cohort], axis=1)
    # tastes: (users of the chunk, 3 cohorts, taste_clusters)
    available = 1 + (start >= VAL_START) + (start >= TEST_START)
    newest_first = rng.random(len(user)) < 0.7  # new notes draw attention: the newest cohort 70% of the time
    cohort = np.where(newest_first, available - 1, rng.integers(0, available))
    return tastes[user - first, cohort, rng.integers(0, cfg.taste_clusters, len(user))]


class _Members:
    """Notes of each cluster as one flat array with offsets: ``flat[offsets[c] + k]`` is cluster c's k-th note."""

    def __init__(self, planted: Planted):
        order = np.argsort(planted.cluster, kind="stable")
        n_clusters = len(planted.cohort_of_cluster)
        self.sizes = np.bincount(planted.cluster, minlength=n_clusters)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.flat = order
        self.sizes = np.maximum(self.sizes, 1)  # an empty cluster id never gets a session (not in any cohort list)


def _chunk(rng: np.random.Generator, cfg: LogConfig, planted: Planted, members: _Members,
           users: np.ndarray) -> tuple[np.ndarray, ...]:
    """(user, note index, timestamp, is_click) of the events of ``users``, in time order."""
    user, start, n_events = _sessions(rng, cfg, users)
    clusters = _session_clusters(rng, cfg, planted, user, start)
    ev_session = np.repeat(np.arange(len(user)), n_events)
    c = clusters[ev_session]
    note = members.flat[members.offsets[c] + rng.integers(0, 1 << 30, len(c)) % members.sizes[c]]
    note = _add_popular_and_noise(rng, cfg, planted, note, start[ev_session])
    step = rng.exponential(60.0, len(note))
    first = np.concatenate([[0], np.cumsum(n_events)[:-1]])
    total = np.cumsum(step)
    within = total - np.repeat(total[first] - step[first], n_events)  # seconds since the session started
    ts = EPOCH0 + (start[ev_session] * cfg.days * 86400.0 + within).astype(np.int64)
    is_click = rng.random(len(note)) < cfg.click_prob
    order = np.argsort(ts, kind="stable")  # a log is appended in time order
    return user[ev_session][order], note[order], ts[order], is_click[order]


def generate_logs(dataset: str | Path, out: str | Path, cfg: LogConfig | None = None,
                  chunk_users: int = 250_000) -> dict[str, int]:
    """Write a behaviour log (``user_id, note_id, timestamp, action``) for a synthetic dataset.

    Users are generated ``chunk_users`` at a time (memory stays bounded for logs of any size); the events of each
    chunk are written in time order, so every user's events are in time order.

    Args:
        dataset: Folder made by ``python -m notellm2_pl synth`` (or any folder with a ``notes_meta.csv`` of
            ``note_id, split, cluster_id``).
        out: Log file to write: ``.parquet`` or ``.csv``.
        cfg: Log settings.
        chunk_users: Users per generated chunk.

    Returns:
        ``{"events": ..., "users": ..., "clicks": ...}``.
    """
    import pyarrow as pa  # optional dependency of the log writer (Parquet, fast CSV)

    cfg = cfg or LogConfig()
    rng = np.random.default_rng(cfg.seed)
    planted = read_planted(dataset, cfg.val_cluster_fraction, cfg.seed)
    members = _Members(planted)
    ids = pa.array(planted.note_ids.tolist())
    actions = pa.array(["view", "click"])
    stats = {"events": 0, "users": cfg.num_users, "clicks": 0}
    with _LogWriter(Path(out)) as writer:
        for lo in range(0, cfg.num_users, chunk_users):
            user, note, ts, is_click = _chunk(rng, cfg, planted, members, np.arange(lo, min(lo + chunk_users,
                                                                                            cfg.num_users)))
            writer.write(pa.table({
                "user_id": pa.array(user.astype(np.int64)),
                "note_id": pa.DictionaryArray.from_arrays(pa.array(note.astype(np.int32)), ids),
                "timestamp": pa.array(ts),
                "action": pa.DictionaryArray.from_arrays(pa.array(is_click.astype(np.int8)), actions)}))
            stats["events"] += len(note)
            stats["clicks"] += int(is_click.sum())
    return stats


def _add_popular_and_noise(rng: np.random.Generator, cfg: LogConfig, planted: Planted, note: np.ndarray,
                           when: np.ndarray) -> np.ndarray:
    """Replace some events by a popular note (oldest cohort) or a random note published by then."""
    cohort = planted.cohort_of_cluster[planted.cluster]
    old = np.flatnonzero(cohort == 0)
    popular = rng.choice(old, size=min(cfg.popular_notes, len(old)), replace=False)
    u = rng.random(len(note))
    note = np.where(u < cfg.popular_prob, popular[rng.integers(0, len(popular), len(note))], note)
    noise = (u >= cfg.popular_prob) & (u < cfg.popular_prob + cfg.noise_prob)
    published = 1 + (when >= VAL_START) + (when >= TEST_START)  # cohorts 0..published-1 are visible
    order = np.argsort(cohort, kind="stable")
    visible = np.searchsorted(cohort[order], published, side="left")  # notes of the visible cohorts
    pick = order[(rng.random(len(note)) * visible).astype(np.int64)]
    return np.where(noise, pick, note)


class _LogWriter:
    """Appends tables to one Parquet or CSV file."""

    def __init__(self, out: Path):
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.writer = out, None

    def __enter__(self) -> Self:
        return self

    def write(self, table: object) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        if self.out.suffix != ".parquet":
            table = pa.table({k: table[k].cast(pa.string()) if k in ("note_id", "action") else table[k]
                              for k in table.column_names})
        if self.writer is None:
            self.writer = (pq.ParquetWriter(self.out, table.schema) if self.out.suffix == ".parquet"
                           else pacsv.CSVWriter(self.out, table.schema))
        self.writer.write_table(table)

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


def score_pairs(pairs: list[tuple[str, str]], planted: Planted, universe: set[str] | None = None) -> dict[str, float]:
    """Precision and recall of mined pairs against the planted relations (same cluster = related).

    Args:
        pairs: Mined ``(query_id, target_id)`` pairs.
        planted: The dataset's planted clusters.
        universe: Notes the recall counts planted pairs among (default: the notes of ``pairs``).

    Returns:
        ``{"pairs", "precision", "recall", "planted"}``: precision = share of mined pairs inside one cluster;
        recall = share of the unordered same-cluster pairs among ``universe`` found in either direction.
    """
    cluster = dict(zip(planted.note_ids.tolist(), planted.cluster.tolist()))
    found = {frozenset(p) for p in pairs if p[0] != p[1] and cluster.get(p[0], -1) == cluster.get(p[1], -2)}
    universe = universe if universe is not None else {n for p in pairs for n in p}
    sizes: dict[int, int] = {}
    for n in universe:
        if n in cluster:
            sizes[cluster[n]] = sizes.get(cluster[n], 0) + 1
    planted_pairs = sum(k * (k - 1) // 2 for k in sizes.values())
    good = sum(1 for p in pairs if cluster.get(p[0], -1) == cluster.get(p[1], -2))
    return {"pairs": len(pairs), "precision": good / len(pairs) if pairs else 0.0,
            "recall": len(found) / planted_pairs if planted_pairs else 0.0, "planted": planted_pairs}
