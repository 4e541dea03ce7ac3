"""The ``neighbours`` table: exact rows equal brute-force top-k, incremental updates equal a full rebuild, resume."""

from __future__ import annotations

import numpy as np
import pytest

from notellm2_pl.retrieval.catalogue import Catalogue
from notellm2_pl.retrieval.neighbour_table import TableSettings, build_table, read_meta, read_table
from notellm2_pl.retrieval.neighbour_update import update_table
from notellm2_pl.retrieval.scoring import exact_topk


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _catalogue(rng: np.random.Generator, n: int, d: int = 16, prefix: str = "n") -> Catalogue:
    return Catalogue([f"{prefix}{i:04d}" for i in range(n)], _unit(rng, n, d))


def _brute(cat: Catalogue, k: int) -> dict[str, list[tuple[str, float]]]:
    """Reference: full score matrix, own note excluded, stable argsort (ties: lower row first)."""
    s = cat.emb.astype(np.float64) @ cat.emb.astype(np.float64).T  # (N, N)
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, : min(k, len(cat.ids) - 1)]
    return {cat.ids[i]: [(cat.ids[j], float(s[i, j])) for j in order[i]] for i in range(len(cat.ids))}


def _as_dict(table) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    d = table.to_pydict()
    for note, rank, nbr, score in zip(d["note_id"], d["rank"], d["neighbour_id"], d["score"]):
        rows = out.setdefault(note, [])
        assert rank == len(rows) + 1
        rows.append((nbr, score))
    return out


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for note, rows in want.items():
        assert [n for n, _ in got[note]] == [n for n, _ in rows], note
        np.testing.assert_allclose([s for _, s in got[note]], [s for _, s in rows], atol=1e-5)


@pytest.mark.parametrize("k", [1, 5, 60])
def test_exact_table_equals_brute_force(tmp_path, k: int) -> None:
    cat = _catalogue(np.random.default_rng(k), 50)
    cat.emb[7] = cat.emb[3]  # an exact duplicate: tie broken by note id
    meta = build_table(cat, tmp_path / "t", TableSettings(k=k, shard_notes=16))
    assert meta["parts"] == [f"part-{i:05d}.parquet" for i in range(4)]
    table = read_table(tmp_path / "t")
    assert table.column_names == ["note_id", "rank", "neighbour_id", "score"]
    _assert_same(_as_dict(table), _brute(cat, k))


@pytest.mark.parametrize("workers", [1, 3])
def test_exact_topk_tiles_and_ties(workers: int) -> None:
    """Every tile shape and worker count gives the stable-argsort order, exact ties included."""
    rng = np.random.default_rng(1)
    e = (rng.integers(-2, 3, size=(300, 8)) / 4).astype(np.float32)  # exact dot products: many exact ties
    s = e.astype(np.float64) @ e.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    want = np.argsort(-s, axis=1, kind="stable")[:, :20]
    for qt, pt in [(2048, 2048), (7, 33), (1, 1), (64, 5)]:
        _, rows = exact_topk(e, e, 20, exclude=np.arange(300), query_tile=qt, pool_tile=pt, workers=workers)
        assert np.array_equal(rows, want), (qt, pt)


def test_approx_table_reports_recall(tmp_path) -> None:
    cat = _catalogue(np.random.default_rng(2), 400)
    meta = build_table(cat, tmp_path / "t", TableSettings(k=5, method="hnsw", shard_notes=100), recall_sample=50)
    assert 0.5 <= meta["approx_recall"]["recall"] <= 1.0
    table = read_table(tmp_path / "t")
    assert table.num_rows == 400 * 5
    d = table.to_pydict()
    assert all(a != b for a, b in zip(d["note_id"], d["neighbour_id"]))


def test_resume_skips_finished_parts(tmp_path, monkeypatch) -> None:
    from notellm2_pl.retrieval import neighbour_table as nt

    cat = _catalogue(np.random.default_rng(3), 40)
    settings = TableSettings(k=3, shard_notes=10)
    calls: list[int] = []
    real = nt.write_part

    def dying(path, table):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while writing part 2
        real(path, table)

    monkeypatch.setattr(nt, "write_part", dying)
    with pytest.raises(KeyboardInterrupt):
        build_table(cat, tmp_path / "t", settings)
    assert read_meta(tmp_path / "t")["parts"] is None
    assert sorted(p.name for p in (tmp_path / "t" / "parts").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    written: list[str] = []
    monkeypatch.setattr(nt, "write_part", lambda path, table: (written.append(path.name), real(path, table)))
    build_table(cat, tmp_path / "t", settings)
    assert written == ["part-00002.parquet", "part-00003.parquet"]
    _assert_same(_as_dict(read_table(tmp_path / "t")), _brute(cat, 3))
    with pytest.raises(FileExistsError):
        build_table(cat, tmp_path / "t", TableSettings(k=4, shard_notes=10))


def test_incremental_equals_full_rebuild(tmp_path) -> None:
    rng = np.random.default_rng(4)
    cat = _catalogue(rng, 120)
    build_table(cat, tmp_path / "t", TableSettings(k=6, shard_notes=32))
    changed = ["n0005", "n0050", "n0119"]
    new = ["m0001", "n0060a", "a0000"]
    removed = ["n0010", "n0033", "n0034", "n0099"]
    updates = Catalogue(changed + new, _unit(rng, 6, 16))
    updates.emb[3] = cat.emb[20]  # a new note duplicating an old one: exact tie
    meta = update_table(tmp_path / "t", updates, removed + ["never-there"])
    up = meta["update"]
    assert (up["added"], up["changed"], up["removed"]) == (3, 3, 4)
    assert up["recomputed"] < 120 and meta["generation"] == 1
    keep = [i for i, nid in enumerate(cat.ids) if nid not in set(changed) | set(removed)]
    full = Catalogue([cat.ids[i] for i in keep] + updates.ids, np.concatenate([cat.emb[keep], updates.emb]))
    got = _as_dict(read_table(tmp_path / "t"))
    _assert_same(got, _brute(full, 6))
    build_table(full, tmp_path / "full", TableSettings(k=6, shard_notes=32))
    _assert_same(got, _as_dict(read_table(tmp_path / "full")))
    names = {p.name for p in (tmp_path / "t" / "parts").iterdir()}
    assert names == set(meta["parts"])  # old generations are gone
    assert not (tmp_path / "t" / "embeddings").exists() and (tmp_path / "t" / "embeddings.g1").is_dir()
    # A second update on top of the first one.
    again = Catalogue(["n0001"], _unit(rng, 1, 16))
    meta2 = update_table(tmp_path / "t", again, ["m0001"])
    assert meta2["generation"] == 2 and meta2["num_notes"] == len(full.ids) - 1
    keep = [i for i, nid in enumerate(full.ids) if nid not in ("n0001", "m0001")]
    full2 = Catalogue([full.ids[i] for i in keep] + again.ids, np.concatenate([full.emb[keep], again.emb]))
    _assert_same(_as_dict(read_table(tmp_path / "t")), _brute(full2, 6))


def test_command_embeds_only_new_and_changed_notes(exported, tmp_path, capsys, monkeypatch) -> None:
    """`neighbours --model --data`, then `--update` after editing the dataset: only the edited notes are embedded."""
    import csv
    import shutil

    from notellm2_pl.commands.neighbours import main
    from notellm2_pl.inference.embedder import Embedder

    data = tmp_path / "data"
    shutil.copytree(exported["data"], data)
    out, full = tmp_path / "nbrs", tmp_path / "full"
    base = ["--model", str(exported["export"]), "--data", str(data), "--k", "4", "--shard_notes", "7"]
    assert main(base + ["--out", str(out)]) == 0
    path = data / "notes_test.csv"
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    removed = rows.pop(3)["note_id"]
    rows[0]["title"] = rows[0]["title"] + " (edited)"
    rows.append({**rows[1], "note_id": "zz-new", "title": "a brand new note"})
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    embedded: list[int] = []
    real = Embedder.embed
    monkeypatch.setattr(Embedder, "embed", lambda self, notes, **kw: (embedded.append(len(notes)),
                                                                       real(self, notes, **kw))[1])
    capsys.readouterr()
    assert main(base + ["--out", str(out), "--update"]) == 0
    assert "2 new or changed note(s) to embed, 1 removed" in capsys.readouterr().out
    assert embedded == [2]
    assert main(base + ["--out", str(full)]) == 0
    got, want = _as_dict(read_table(out)), _as_dict(read_table(full))
    assert removed not in got and "zz-new" in got
    _assert_same(got, want)
