"""``serve`` end to end: the real server in a subprocess on 127.0.0.1, spoken to over HTTP.

One server per module (starting one loads the model in three worker processes); the last test kills it with
SIGKILL and restarts it on the same live index.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("litserve")  # the serve extra
pytest.importorskip("lancedb")
pytestmark = pytest.mark.slow  # a multi-process server: each start loads the model three times
START_TIMEOUT_S = 240  # generous: the CI cores may be shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m notellm2_pl serve`` in its own process group, with a tiny HTTP client."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log, self.proc = args, log, None
        self.port = _free_port()

    def start(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "notellm2_pl", "serve", *self.args, "--port",
                                      str(self.port)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if self.call("GET", "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.kill()
        raise TimeoutError(f"serve not healthy after {START_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the server and its workers) and wait for the server."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL of whatever is left of the group."""
        self.kill(signal.SIGTERM)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             timeout: float = 60) -> tuple[int, Any]:
        """``(status, parsed JSON or text)`` of one request."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text


def _png(size: tuple[int, int], noise: bool = False) -> str:
    from PIL import Image

    arr = np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8) if noise else None
    img = Image.fromarray(arr) if noise else Image.new("RGB", size, (200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """Embeddings of the test notes, a FAISS index and a live index over them, and the server."""
    from notellm2_pl import Embedder
    from notellm2_pl.commands.index import main as index_main
    from notellm2_pl.retrieval.evaluation import load_test_pool
    from notellm2_pl.retrieval.faiss_index import load_index
    from notellm2_pl.retrieval.prediction_writer import write_embeddings

    root = tmp_path_factory.mktemp("serve")
    ids, notes, _ = load_test_pool(exported["data"])
    embedder = Embedder.from_pretrained(exported["export"])
    arrays = embedder.embed_all([notes[i] for i in ids], progress=False)
    emb_dir = write_embeddings(root / "emb", ids, arrays, data_root=str(exported["data"]))
    assert index_main(["--embeddings", str(emb_dir), "--out", str(root / "notes.faiss")]) == 0
    assert index_main(["--embeddings", str(emb_dir), "--out", str(root / "live"), "--live"]) == 0
    server = Server(["--model", str(exported["export"]), "--index", str(root / "live"), "--device", "cpu",
                     "--threads", "1", "--max-batch-size", "8", "--batch-timeout", "0.05", "--max-payload-mb", "1",
                     "--max-image-mb", "0.05", "--max-image-pixels", "1000000"], root / "server.log")
    server.start()
    try:
        yield {"server": server, "ids": ids, "notes": notes, "embedder": embedder, "emb": arrays["e_m"],
               "faiss": load_index(root / "notes.faiss"), **exported}
    finally:
        server.stop()


def _as_request(note: Any) -> dict[str, Any]:
    return {"title": note.title, "topics": note.topics, "content": note.content, "image": note.image}


def test_embed_equals_embedder_also_when_batched(served):
    s, notes = served["server"], [served["notes"][i] for i in served["ids"][:6]]
    payload = [_as_request(n) for n in notes]
    payload[1]["image"] = base64.b64encode(Path(notes[1].image).read_bytes()).decode()  # bytes, not a path
    want = served["embedder"].embed(notes, progress=False)
    status, out = s.call("POST", "/embed", {"notes": payload})
    assert status == 200 and out["dim"] == want.shape[1]
    np.testing.assert_allclose(np.array(out["vectors"]), want, atol=1e-5)
    with ThreadPoolExecutor(6) as pool:  # concurrent one-note requests: batched by LitServe, same vectors
        replies = list(pool.map(lambda p: s.call("POST", "/embed", {"notes": [p]}), payload))
    for (status, out), row in zip(replies, want):
        assert status == 200
        np.testing.assert_allclose(out["vectors"][0], row, atol=1e-5)


def test_neighbours_equal_offline_search(served):
    from notellm2_pl.retrieval.search import neighbours

    s, ids = served["server"], served["ids"]
    for qi in (0, 5, 11):
        status, out = s.call("POST", "/neighbours", {"note_id": ids[qi], "k": 5})
        assert status == 200 and out["query"]["note_id"] == ids[qi]
        want = neighbours(served["faiss"], served["emb"][qi: qi + 1], 5, exclude=[ids[qi]])[0]
        assert [h["note_id"] for h in out["neighbours"]] == [h["note_id"] for h in want]
        np.testing.assert_allclose([h["score"] for h in out["neighbours"]], [h["score"] for h in want], atol=1e-5)
        assert out["neighbours"][0]["title"] == served["notes"][want[0]["note_id"]].title
    note = served["notes"][ids[3]]
    status, out = s.call("POST", "/neighbours", {"note": _as_request(note), "k": 3})
    assert status == 200 and out["neighbours"][0]["note_id"] == ids[3]  # a new copy of a note finds it first
    first = out["neighbours"][0]["note_id"]
    status, out = s.call("POST", "/neighbours", {"note": _as_request(note), "k": 3, "exclude": [first]})
    assert status == 200 and first not in [h["note_id"] for h in out["neighbours"]]


def test_add_update_delete_visible_on_next_request(served):
    s, ids = served["server"], served["ids"]
    note = _as_request(served["notes"][ids[2]]) | {"note_id": "fresh-1", "category": "fresh"}
    status, out = s.call("POST", "/notes", {"notes": [note]})
    assert status == 200 and out["inserted"] == 1
    status, out = s.call("POST", "/neighbours", {"note_id": ids[2], "k": 3, "category": "fresh"})
    assert status == 200 and [h["note_id"] for h in out["neighbours"]] == ["fresh-1"]
    status, out = s.call("POST", "/notes", {"notes": [note | {"title": "renamed"}]})
    assert status == 200 and out["updated"] == 1
    status, out = s.call("POST", "/neighbours", {"note_id": "fresh-1", "k": 1})
    assert status == 200 and out["query"]["title"] == "renamed" and out["neighbours"][0]["note_id"] == ids[2]
    assert s.call("DELETE", "/notes/fresh-1")[0] == 200
    assert s.call("POST", "/neighbours", {"note_id": "fresh-1", "k": 1})[0] == 404
    status, out = s.call("DELETE", "/notes/fresh-1")
    assert status == 404 and "fresh-1" in out["detail"]


BAD = [  # (method, path, body or raw bytes, status, text the message must contain)
    ("POST", "/embed", {"notes": [{"content": "no title"}]}, 422, "title"),
    ("POST", "/embed", {"notes": [{"title": 5}]}, 422, "title"),
    ("POST", "/embed", {"notes": [{"title": "t", "topics": [1]}]}, 422, "topics"),
    ("POST", "/embed", {"notes": [{"title": "t", "colour": "red"}]}, 422, "colour"),
    ("POST", "/embed", {"notes": []}, 422, "notes"),
    ("POST", "/embed", b"{not json", 422, "json"),
    ("POST", "/embed", {"notes": [{"title": "t"}]}, 422, "notes[0].image"),
    ("POST", "/embed", {"notes": [{"title": "t", "image": base64.b64encode(b"hello world").decode()}]}, 422,
     "notes[0].image"),
    ("POST", "/embed", {"notes": [{"title": "t", "image": "/no/such/file.png"}]}, 422, "notes[0].image"),
    ("POST", "/embed", {"notes": [{"title": "t", "image": _png((1200, 1000))}]}, 413, "pixels"),
    ("POST", "/embed", {"notes": [{"title": "t", "image": _png((160, 160), noise=True)}]}, 413, "notes[0].image"),
    ("POST", "/embed", b'{"notes": [{"title": "' + b"x" * (1 << 20) + b'"}]}', 413, "body"),
    ("POST", "/neighbours", {"note_id": "no-such-note"}, 404, "note_id"),
    ("POST", "/neighbours", {"k": 3}, 422, "note_id"),
    ("POST", "/neighbours", {"note_id": "a", "k": 0}, 422, "k"),
    ("POST", "/neighbours", {"note_id": "a", "k": "5"}, 422, "k"),
    ("POST", "/neighbours", {"note": {"title": "t", "image": "%%%"}}, 422, "note.image"),
    ("POST", "/notes", {"notes": [{"title": "no id"}]}, 422, "note_id"),
    ("POST", "/notes", {"notes": [{"note_id": "a", "title": "t"}, {"note_id": "a", "title": "t"}]}, 422, "duplicate"),
]


@pytest.mark.parametrize("method,path,body,status,text", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_4xx_naming_the_field(served, method, path, body, status, text):
    s = served["server"]
    got, out = s.call(method, path, raw=body if isinstance(body, bytes) else None,
                      body=None if isinstance(body, bytes) else body)
    assert got == status, out
    assert text.lower() in json.dumps(out).lower()
    assert s.call("GET", "/health")[0] == 200


def test_failed_add_writes_nothing_and_server_keeps_serving(served):
    s, ids = served["server"], served["ids"]
    good = _as_request(served["notes"][ids[1]]) | {"note_id": "half-1"}
    bad = {"note_id": "half-2", "title": "t", "image": base64.b64encode(b"not an image").decode()}
    status, out = s.call("POST", "/notes", {"notes": [good, bad]})
    assert status == 422 and "notes[1].image" in out["detail"]
    assert s.call("POST", "/neighbours", {"note_id": "half-1"})[0] == 404
    assert s.call("POST", "/embed", {"notes": [_as_request(served["notes"][ids[0]])]})[0] == 200
    status, metrics = s.call("GET", "/metrics")
    assert status == 200 and metrics["server_errors"] == 0 and metrics["routes"]["POST /embed"]["count"] > 0


def test_kill9_and_restart_keeps_every_acknowledged_note(served):
    s, ids = served["server"], served["ids"]
    acked = []
    for i in range(5):
        note = _as_request(served["notes"][ids[i]]) | {"note_id": f"durable-{i}", "category": "durable"}
        status, _ = s.call("POST", "/notes", {"notes": [note]})
        assert status == 200
        acked.append(note["note_id"])
    assert s.call("DELETE", "/notes/durable-4")[0] == 200
    s.kill(signal.SIGKILL)  # the whole process group, workers included: no shutdown code runs
    s.start()
    status, out = s.call("POST", "/neighbours", {"note_id": ids[0], "k": 10, "category": "durable"})
    assert status == 200 and sorted(h["note_id"] for h in out["neighbours"]) == acked[:4]
    assert s.call("POST", "/neighbours", {"note_id": "durable-4"})[0] == 404


def test_index_live_from_model_embeds_every_note_of_the_dataset(served, tmp_path):
    from notellm2_pl.commands.index import main as index_main
    from notellm2_pl.data.tables import load_split
    from notellm2_pl.retrieval.live_index import LiveIndex

    assert index_main(["--live", "--model", str(served["export"]), "--data", str(served["data"]), "--out",
                       str(tmp_path / "live")]) == 0
    live = LiveIndex.open(tmp_path / "live")
    every = set(load_split(served["data"], "test").notes) | set(load_split(served["data"], "train").notes)
    assert len(live) == len(every)
    got = live.fetch(served["ids"][:3])
    for i, nid in enumerate(served["ids"][:3]):
        np.testing.assert_allclose(got[nid]["vector"], served["emb"][i], atol=1e-5)
        assert got[nid]["title"] == served["notes"][nid].title
