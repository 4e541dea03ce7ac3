"""Pair mining from behaviour logs (docs/data.md#mining-pairs-from-behaviour-logs): the query against a brute-force
reference, DuckDB = Spark, leakage-free splits, bad-input counts, the empty-result error and the end-to-end path
logs -> mine-pairs -> files that ``load_split`` accepts."""

from __future__ import annotations

import csv
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notellm2_pl.commands.mine_pairs import main as mine_main
from notellm2_pl.data.mining import MiningConfig, MiningError, mine_pairs, open_engine
from notellm2_pl.data.mining.query import cooccurrence_stages
from notellm2_pl.data.mining.synthetic_logs import LogConfig, generate_logs, read_planted, score_pairs
from notellm2_pl.data.synthetic import generate, preset_config
from notellm2_pl.data.tables import load_split

duckdb = pytest.importorskip("duckdb")

Event = tuple[int, str, str, float, str]  # (period, user, note, ts, action)


def reference_top(events: list[Event], cfg: MiningConfig) -> dict[tuple[int, str, str], float]:
    """NoteLLM's co-occurrence by brute force, in exact fractions: {(period, query, target): score}."""
    by_user: dict[tuple[int, str], list[Event]] = defaultdict(list)
    for e in events:
        by_user[(e[0], e[1])].append(e)
    users: dict[tuple[int, str, str], set[str]] = defaultdict(set)
    n_clicked: dict[tuple[int, str], int] = {}
    for (period, user), evs in by_user.items():
        n_clicked[(period, user)] = len({e[2] for e in evs if e[4] in cfg.click_actions})
        for _, _, a, ta, act_a in evs:
            for _, _, b, tb, act_b in evs:
                if act_a in cfg.view_actions and act_b in cfg.click_actions and a != b and ta < tb <= ta + cfg.window_s:
                    users[(period, a, b)].add(user)
                    if cfg.symmetric:
                        users[(period, b, a)].add(user)
    scored = {}
    for (period, a, b), us in users.items():
        score = round(float(sum(Fraction(1, n_clicked[(period, u)]) for u in us)), 12)
        if len(us) >= cfg.min_support and cfg.lower <= score <= cfg.upper:
            scored[(period, a, b)] = score
    by_query: dict[tuple[int, str], list[tuple[float, str]]] = defaultdict(list)
    for (period, a, b), s in scored.items():
        by_query[(period, a)].append((-s, b))
    return {(p, a, b): -s for (p, a), cands in by_query.items() for s, b in sorted(cands)[: cfg.top_t]}


_ENGINE = None


def _duck():
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = open_engine("duckdb", memory_limit="500MB", threads=1)
    return _ENGINE


def engine_top(engine, events: list[Event], cfg: MiningConfig) -> dict[tuple[int, str, str], float]:
    """Run the one query definition on ``engine`` over ``events`` (already periodised)."""
    rows = [(p, u, n, float(t), a in cfg.view_actions, a in cfg.click_actions) for p, u, n, t, a in events]
    engine.con.execute("CREATE OR REPLACE TEMP TABLE events (period INTEGER, user_id VARCHAR, note_id VARCHAR, "
                       "ts DOUBLE, is_view BOOLEAN, is_click BOOLEAN)")
    if rows:
        engine.con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
    for name, sql in cooccurrence_stages(cfg):
        engine.create(name, sql)
    return {(p, q, t): s for p, q, t, s, _ in engine.rows("SELECT * FROM top")}


events_strategy = st.lists(st.tuples(st.integers(0, 1), st.sampled_from("uvwx"), st.sampled_from("abcdefg"),
                                     st.integers(0, 40), st.sampled_from(["view", "click", "click"])), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy, window=st.sampled_from([5.0, 15.0, 1e6]), upper=st.sampled_from([0.6, 30.0]),
       lower=st.sampled_from([0.0, 0.25]), top_t=st.sampled_from([1, 2, 10]), min_support=st.sampled_from([1, 2]),
       symmetric=st.booleans())
def test_query_matches_brute_force_reference(events, window, upper, lower, top_t, min_support, symmetric):
    cfg = MiningConfig(window_s=window, upper=upper, lower=lower, top_t=top_t, min_support=min_support,
                       symmetric=symmetric)
    evs = [(p, u, n, float(t), a) for p, u, n, t, a in events]
    got, want = engine_top(_duck(), evs, cfg), reference_top(evs, cfg)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-9)


def test_score_is_weighted_by_one_over_user_clicks():
    # u1 clicks 2 distinct notes (N=2), u2 clicks 4 (N=4): s(a->b) = 1/2 + 1/4; u2's repeat counts once.
    evs = [(0, "u1", "a", 1.0, "view"), (0, "u1", "b", 2.0, "click"), (0, "u1", "c", 3.0, "click"),
           (0, "u2", "a", 1.0, "click"), (0, "u2", "b", 2.0, "click"), (0, "u2", "a", 3.0, "click"),
           (0, "u2", "b", 4.0, "click"), (0, "u2", "d", 5.0, "click"), (0, "u2", "e", 6.0, "click")]
    top = engine_top(_duck(), evs, MiningConfig(lower=0.0))
    assert top[(0, "a", "b")] == pytest.approx(0.75)
    assert (0, "b", "a") in top  # u2 clicked b at 2 then a at 3: directed b->a from u2 only
    assert top[(0, "b", "a")] == pytest.approx(0.25)


# ---------------------------------------------------------------- files: synthetic dataset + log, end to end


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    generate(root, preset_config("tiny", num_clusters=24, notes_per_cluster=8, image_size=32))
    return root


@pytest.fixture(scope="module")
def synth_log(synth_dir, tmp_path_factory) -> Path:
    log = tmp_path_factory.mktemp("logs") / "log.parquet"
    generate_logs(synth_dir, log, LogConfig(num_users=600, seed=1))
    return log


def _pairs(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(r[0], r[1]) for r in list(csv.reader(f))[1:]]


def test_end_to_end_logs_to_loadable_dataset(synth_dir, synth_log, tmp_path, capsys):
    out = tmp_path / "mined"
    assert mine_main(["--logs", str(synth_log), "--catalogue", str(synth_dir), "--out", str(out),
                      "--score-against", str(synth_dir)]) == 0
    printed = capsys.readouterr().out
    assert "top-t" in printed and "test at-most-once" in printed and "precision" in printed
    for split in ("train", "val", "test"):
        loaded = load_split(out, split)  # on_error="raise": every row and pair is valid
        assert loaded.pairs["all"], split
    test = load_split(out, "test")
    assert set(test.pairs) == {"all", "shortquery", "shortgtdoc", "longquery", "longgtdoc"}
    notes = [n for p in test.pairs["all"] for n in p]
    assert len(notes) == len(set(notes))  # at-most-once: no note twice in the test pairs
    score = score_pairs(test.pairs["all"], read_planted(synth_dir))
    assert score["precision"] > 0.6  # mined test pairs mostly inside a planted cluster


def test_cold_start_split_has_no_leakage(synth_dir, synth_log, tmp_path):
    out = tmp_path / "cold"
    mine_pairs(synth_log, synth_dir, out, MiningConfig(), open_engine("duckdb", "500MB", threads=1))
    train_notes = {n for p in _pairs(out / "pairs_train.csv") for n in p}
    for split in ("val", "test"):
        evaluated = {n for p in _pairs(out / f"pairs_{split}.csv") for n in p}
        assert evaluated and not evaluated & train_notes, split
    with open(out / "notes_test.csv", newline="", encoding="utf-8") as f:
        pool = {r["note_id"] for r in csv.DictReader(f)}
    assert not pool & train_notes


def test_time_split_keeps_periods_apart(synth_dir, synth_log, tmp_path):
    out = tmp_path / "time"
    engine = open_engine("duckdb", "500MB", threads=1)
    report = mine_pairs(synth_log, synth_dir, out, MiningConfig(split="time"), engine)
    assert report.cuts["first_event"] < report.cuts["val_start"] < report.cuts["test_start"] < report.cuts["last_event"]
    assert _pairs(out / "pairs_test.csv")


# ---------------------------------------------------------------- bad input


def _write_log(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "note_id", "timestamp", "action"])
        w.writerows(rows)
    return path


def _catalogue(path: Path, ids: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["note_id", "title", "topics", "content", "image"])
        w.writerows([(i, f"title {i}", "t", f"content of {i}", "") for i in ids])
    return path


def test_bad_input_is_counted_and_named(tmp_path):
    cat = _catalogue(tmp_path / "notes.csv", list("abcdef"))
    rows = [("u1", "a", "100", "view"), ("u1", "b", "110", "click"), ("u1", "c", "105", "click"),  # 1 out of order
            ("u2", "a", "1970-01-01T00:01:40", "view"), ("u2", "b", "1970-01-01 00:01:50", "click"),  # ISO times
            ("u3", "a", "not a time", "click"), ("u3", "b", "", "click"),  # 2 unparsable
            ("u4", "zz", "100", "click"), ("u4", "yy", "101", "click"), ("u4", "zz", "102", "click"),  # 3 unknown
            ("u5", "a", "100", "click"),  # one event
            ("u6", "a", "100", "like"), ("u6", "b", "101", "like"),  # other action
            ("", "a", "100", "click"),  # missing user
            ("u7", "d", "400", "click"), ("u7", "e", "410", "click"), ("u8", "d", "405", "click"),
            ("u8", "e", "415", "click"), ("u9", "f", "900", "view"), ("u9", "d", "910", "click")]
    report = mine_pairs(_write_log(tmp_path / "log.csv", rows), cat, tmp_path / "out",
                        MiningConfig(split="time", lower=0.0, val_fraction=0.0, test_fraction=0.1),
                        open_engine("duckdb", "500MB", threads=1))
    stages = {s.name: s for s in report.stages}
    assert stages["read"].kept == len(rows)
    assert stages["parse"].dropped == {"missing user or note id": 1, "unparsable timestamps": 2}
    assert stages["parse"].noted["out-of-order timestamps (sorted by time)"] == 1
    assert stages["catalogue"].dropped == {"events of unknown note ids": 3}
    assert stages["catalogue"].noted == {"distinct unknown note ids": 2} and "yy, zz" in stages["catalogue"].detail
    assert stages["actions"].dropped == {"events of other actions": 2}
    assert stages["users"].noted["users with one event"] == 1  # u5 (u4's events were all unknown ids)
    # ISO and epoch timestamps mean the same instants: u2 behaves like u1 (a viewed, then b clicked 10 s later)
    assert ("a", "b") in _pairs(tmp_path / "out" / "pairs_train.csv")


def test_empty_result_names_the_stage(tmp_path, capsys):
    cat = _catalogue(tmp_path / "notes.csv", ["a", "b"])
    log = _write_log(tmp_path / "log.csv", [("u1", "x", "1", "click"), ("u1", "y", "2", "click")])
    with pytest.raises(MiningError, match="'catalogue' removed everything") as err:
        mine_pairs(log, cat, tmp_path / "out", MiningConfig(), open_engine("duckdb", "500MB", threads=1))
    assert err.value.report.stages[-1].name == "catalogue"
    log = _write_log(tmp_path / "log2.csv", [("u1", "a", "1", "click"), ("u1", "b", "2", "click"),
                                             ("u1", "a", "100", "click"), ("u1", "b", "101", "click")])
    rc = mine_main(["--logs", str(log), "--catalogue", str(cat), "--out", str(tmp_path / "o2"), "--lower", "5",
                    "--val-fraction", "0"])
    assert rc == 2
    captured = capsys.readouterr()
    assert "'lower bound' removed everything" in captured.err and "upper bound" in captured.out
    assert not (tmp_path / "o2").exists()


def test_bad_settings_are_refused():
    with pytest.raises(MiningError, match="lower"):
        MiningConfig(lower=2.0, upper=1.0)
    with pytest.raises(MiningError, match="test_fraction"):
        MiningConfig(val_fraction=0.5, test_fraction=0.5)


# ---------------------------------------------------------------- DuckDB = Spark


@pytest.mark.slow
def test_duckdb_and_spark_return_identical_pairs(synth_dir, tmp_path):
    pytest.importorskip("pyspark")
    log = tmp_path / "log.csv"
    generate_logs(synth_dir, log, LogConfig(num_users=150, seed=3))
    cfg = MiningConfig(split="time", lower=0.0)
    tops = {}
    for name in ("duckdb", "spark"):
        engine = open_engine(name, "500MB", threads=1, spark_master="local[2]")
        try:
            mine_pairs(log, synth_dir, tmp_path / name, cfg, engine)
            tops[name] = {(p, q, t): (s, n) for p, q, t, s, n in engine.rows("SELECT * FROM top")}
        finally:
            engine.close()
    assert tops["duckdb"].keys() == tops["spark"].keys() and tops["duckdb"]
    for k, (s, n) in tops["duckdb"].items():
        assert abs(tops["spark"][k][0] - s) < 1e-9 and tops["spark"][k][1] == n
    for f in sorted(p.name for p in (tmp_path / "duckdb").glob("*.csv")):
        rows = {}
        for name in ("duckdb", "spark"):
            with open(tmp_path / name / f, newline="", encoding="utf-8") as fh:
                rows[name] = list(csv.reader(fh))
        assert rows["duckdb"] == rows["spark"], f


@pytest.mark.slow
def test_mined_pairs_fit_and_evaluate(synth_dir, synth_log, tiny_ckpts, tmp_path):
    """logs -> mine-pairs -> fit -> evaluate through the real CLI on tiny backbones (the ablate runner)."""
    from _tiny_grid import run_tiny_grid

    data = tmp_path / "mined"
    assert mine_main(["--logs", str(synth_log), "--catalogue", str(synth_dir), "--out", str(data)]) == 0
    run_tiny_grid(tmp_path, data, tiny_ckpts, name="mined")
