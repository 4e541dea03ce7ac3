"""The live index (LanceDB) and the request checks of ``serve``, in process (no server)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

pytest.importorskip("lancedb")

from notellm2_pl.inference.note_requests import (
    ImageLimits,
    NeighboursRequest,
    NoteIn,
    NotesRequest,
    RequestError,
    decode_notes,
)
from notellm2_pl.inference.serving_http import Metrics, route_of
from notellm2_pl.retrieval.live_index import LiveIndex, sql_str


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture()
def live(tmp_path):
    vecs = _unit(200, 8)
    index = LiveIndex.create(tmp_path / "live", 8, "e_m")
    ids = [f"n{i:03d}" for i in range(200)]
    index.add(ids, vecs, [f"title {i}" for i in range(200)], ["even" if i % 2 == 0 else "odd" for i in range(200)])
    index.build_ann("flat")
    return index, ids, vecs


def test_search_is_exact_top_k_with_filters(live):
    index, ids, vecs = live
    q = vecs[7]
    scores = vecs @ q
    hits = index.search(q, 5, exclude=[ids[7]])
    want = [ids[i] for i in np.argsort(-scores) if i != 7][:5]
    assert [h["note_id"] for h in hits] == want
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(scores)[::-1][1:6], atol=1e-5)
    odd = index.search(q, 5, category="odd", exclude=[want[0]])
    assert all(h["category"] == "odd" for h in odd) and want[0] not in [h["note_id"] for h in odd]
    assert odd[0]["title"].startswith("title ")


def test_upsert_delete_fetch_and_reopen(live, tmp_path):
    index, ids, _ = live
    new = _unit(2, 8, seed=1)
    assert index.upsert(["x1", ids[0]], new, ["new", "replaced"], ["fresh", None]) == {"inserted": 1, "updated": 1}
    other = LiveIndex.open(tmp_path / "live")  # another connection sees the commit at once
    got = other.fetch(["x1", ids[0], "missing"])
    assert set(got) == {"x1", ids[0]} and got[ids[0]]["title"] == "replaced"
    np.testing.assert_allclose(got["x1"]["vector"], new[0])
    assert other.search(new[0], 1)[0]["note_id"] == "x1"
    assert index.delete(["x1", "missing"]) == 1
    assert "x1" not in other.fetch(["x1"]) and len(other) == 200
    assert other.key == "e_m" and other.dim == 8


def test_ids_with_quotes_are_literals(live):
    index, _, vecs = live
    odd_id = "it's'); DROP"
    index.upsert([odd_id], vecs[:1], ["q"], ["c'at"])
    assert sql_str("a'b") == "'a''b'"
    assert set(index.fetch([odd_id])) == {odd_id}
    assert [h["note_id"] for h in index.search(vecs[0], 1, category="c'at")] == [odd_id]
    assert index.delete([odd_id]) == 1


def test_open_missing_index_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="index --embeddings"):
        LiveIndex.open(tmp_path / "none")


def test_ivf_index_finds_the_same_top_1(live):
    index, ids, vecs = live
    index.build_ann("ivf", partitions=4)
    assert index.search(vecs[3], 1, nprobes=4)[0]["note_id"] == ids[3]


def _b64_png(size=(8, 8)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_decode_notes_images_and_errors(tmp_path, image_dir):
    limits = ImageLimits(max_bytes=10_000, max_pixels=10_000)
    notes = [NoteIn(title="a", image=str(image_dir / "img0.png"), topics="x|y"),
             NoteIn(title="b", image="data:image/png;base64," + _b64_png())]
    out = decode_notes(notes, limits, str(tmp_path), needs_image=True)
    assert out.notes[0].topics == ["x", "y"] and out.notes[0].image == str(image_dir / "img0.png")
    assert len(out.spooled) == 1 and out.notes[1].image == out.spooled[0]
    out.cleanup()
    assert not list(tmp_path.glob("*.img"))
    cases = [(NoteIn(title="c"), 422, "notes[0].image"),
             (NoteIn(title="c", image=base64.b64encode(b"nope").decode()), 422, "decodable"),
             (NoteIn(title="c", image=_b64_png((200, 200))), 413, "pixels"),
             (NoteIn(title="c", image="../etc/passwd"), 422, "neither")]
    for note, status, text in cases:
        with pytest.raises(RequestError, match=r"notes\[0\]\.image") as err:
            decode_notes([note], limits, str(tmp_path), needs_image=True)
        assert err.value.status == status and text in str(err.value) + err.value.field
    assert not list(tmp_path.glob("*.img"))  # nothing left spooled after a refusal
    with pytest.raises(RequestError, match="leaves the image root"):
        decode_notes([NoteIn(title="c", image="../img0.png")], ImageLimits(root=str(image_dir / "sub")),
                     str(tmp_path), needs_image=True)


def test_request_shapes():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one"):
        NeighboursRequest(note_id="a", note=NoteIn(title="t"))
    with pytest.raises(ValidationError, match="both added and deleted"):
        NotesRequest(notes=[{"note_id": "a", "title": "t"}], delete=["a"])
    with pytest.raises(ValidationError):
        NoteIn(title=3)
    assert NotesRequest(delete=["a"]).missing_ok


def test_metrics_counts_routes():
    m = Metrics()
    m.record("POST", "/embed", 200, 0.003)
    m.record("DELETE", "/notes/abc", 404, 0.5)
    m.record("GET", "/health", 503, 0.001)
    snap = m.snapshot()
    assert snap["requests"] == 3 and snap["server_errors"] == 0
    assert snap["routes"]["DELETE /notes/{note_id}"]["by_status"] == {"404": 1}
    assert snap["routes"]["POST /embed"]["latency_buckets"]["le_5ms"] == 1
    assert route_of("/etc/secret") == "other"
