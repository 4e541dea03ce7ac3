"""Streaming data on object storage: ``prepare`` to ``s3://bucket/prefix`` and read back, against a local
S3-compatible server (moto's, on 127.0.0.1, started and stopped here; no external service).

The URL path uploads with ``litdata.optimize`` and writes the manifest through fsspec (s3fs); reading streams the
chunks through litdata's S3 downloader into a local cache. What comes back must be what the same dataset prepared
to a local folder holds. The server speaks HTTPS with a throwaway CA: litdata moves chunks with obstore, which it
configures so that a plain ``http://`` endpoint is refused (docs/data.md, "Object storage").
"""

from __future__ import annotations

import datetime
import ipaddress
import multiprocessing
import threading
from pathlib import Path

import pytest
import torch

pytest.importorskip("moto.server", reason="needs moto[server] (the test extra)")
pytest.importorskip("s3fs", reason="needs s3fs (the test extra)")

from notellm2_pl.data.streaming.prepare import prepare
from notellm2_pl.data.streaming.source import StreamSource

BUCKET = "notellm2-test"
URL = f"s3://{BUCKET}/prepared/tiny"
DM_ARGS = {"batch_size": 4, "eval_batch_size": 8, "max_tokens": 64, "seed": 7}


def _tls_files(folder: Path) -> tuple[str, str, str]:
    """(CA certificate, server certificate for 127.0.0.1, server key): PEM files under ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)

    def cert(subject: str, public_key, signer, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notellm2 test CA")]))
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(start + datetime.timedelta(hours=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(x509.SubjectAlternativeName([ip]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = {"ca.pem": cert("notellm2 test CA", ca_key.public_key(), ca_key, True),
             "server.pem": cert("127.0.0.1", key.public_key(), ca_key, False)}
    for name, c in files.items():
        (folder / name).write_bytes(c.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return str(folder / "ca.pem"), str(folder / "server.pem"), str(folder / "server.key")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 (a free port, HTTPS), a bucket, and the environment that points boto3, s3fs
    and obstore (litdata's clients) at it."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    ca, cert, key = _tls_files(tmp_path_factory.mktemp("tls"))
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True,
                         request_handler=MotoRequestHandler, ssl_context=(cert, key))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"https://127.0.0.1:{server.server_port}"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ENDPOINT_URL", endpoint)  # boto3 (litdata's uploads and index), s3fs; obstore via litdata
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_CA_BUNDLE", ca)  # boto3 and s3fs trust the test CA
        env.setenv("SSL_CERT_FILE", ca)  # obstore (litdata's chunk transfers) too
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        try:
            yield endpoint
        finally:
            server.shutdown()
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def data(s3, tmp_path_factory) -> dict[str, str]:
    """The tiny synthetic dataset prepared to a local folder and to ``URL``.

    ``litdata.optimize`` (one run per prepared dataset) starts its writer and uploader processes with ``spawn``, each
    importing torch again: about 10 s a dataset on a small machine. Here it runs as litdata runs in a notebook, with
    ``fork`` (the same processes and uploads, 5x faster); its staging folders are under tmp.
    """
    import litdata.processing.data_processor as litdata_processor

    from notellm2_pl.data.synthetic import PRESETS, generate

    root = tmp_path_factory.mktemp("object_store")
    generate(root / "raw", PRESETS["tiny"])
    prepare(str(root / "raw"), str(root / "local"))
    start_method = multiprocessing.get_start_method(allow_none=True)
    with pytest.MonkeyPatch.context() as env:
        env.setattr(litdata_processor, "in_notebook", lambda: True)
        env.setenv("DATA_OPTIMIZER_CACHE_FOLDER", str(root / "optimize_chunks"))
        env.setenv("DATA_OPTIMIZER_DATA_CACHE_FOLDER", str(root / "optimize_data"))
        try:
            prepare(str(root / "raw"), URL)
        finally:  # optimize sets the process-wide start method: leave it as it was
            multiprocessing.set_start_method(start_method, force=True)
    return {"root": str(root), "raw": str(root / "raw"), "local": str(root / "local"), "cache": str(root / "cache")}


def _without_seconds(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "seconds"}


def test_prepare_uploads_every_dataset_and_the_manifest(data):
    import fsspec

    from notellm2_pl.data.streaming.layout import read_manifest

    fs = fsspec.filesystem("s3")
    local = read_manifest(data["local"])
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(URL)}
    expected = {"streaming.json", "notes_train", "notes_test", "ids_train", "ids_test", "train_pairs"}
    expected |= {f"pairs_{split}" + ("" if s == "all" else f"_{s}") for split in ("val", "test")
                 for s in local["pair_sets"][split]}
    assert names == expected
    assert any(p.endswith(".bin") for p in fs.ls(f"{URL}/notes_train"))  # chunks, not just an index
    assert _without_seconds(read_manifest(URL)) == _without_seconds(local)
    assert not list(Path(data["root"], "optimize_chunks").glob("**/*.bin"))  # every staged chunk was uploaded


def test_reads_back_what_a_local_prepare_holds(data):
    local, remote = StreamSource(data["local"]), StreamSource(URL, cache_dir=data["cache"])
    for split in ("train", "test"):
        assert remote.note_ids(split) == local.note_ids(split) != []
        assert remote.raw_lengths(split) == local.raw_lengths(split)
    for split in ("val", "test"):
        assert remote.pair_sets(split) == local.pair_sets(split)
    for split in ("train", "test"):
        a, b = local.note_map(split), remote.note_map(split)
        for note_id in (local.note_ids(split)[0], local.note_ids(split)[-1]):
            x, y = a[note_id], b[note_id]
            assert (y.note_id, y.title, y.topics, y.content, y.image) == (x.note_id, x.title, x.topics, x.content,
                                                                          x.image)
            assert y.image_bytes and y.image_bytes == x.image_bytes
    assert any(Path(data["cache"]).glob("**/*.bin"))  # the chunks came through litdata's local cache


def test_training_pairs_stream_from_the_bucket(data):
    from litdata import StreamingDataset

    from notellm2_pl.data.streaming.layout import train_pairs_dir

    a = StreamingDataset(train_pairs_dir(data["local"]))
    b = StreamingDataset(train_pairs_dir(URL), cache_dir=data["cache"])
    assert len(a) == len(b) == 72
    for x, y in zip(a, b):
        for side in ("query", "target"):
            assert bytes(x[side]["fields"]) == bytes(y[side]["fields"])
            assert bytes(x[side]["image"]) == bytes(y[side]["image"])


def _assert_same_batches(a: list[dict], b: list[dict], what: str) -> None:
    assert len(a) == len(b) > 0, what
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k, v in x.items():
            assert torch.equal(v, y[k]) if torch.is_tensor(v) else v == y[k], (what, k)


def test_data_module_batches_equal_the_local_prepare(data):
    from _scale_helpers import make_ckpts, tiny_module

    from notellm2_pl.data.datamodule import NoteDataModule

    module = tiny_module(make_ckpts(Path(data["root"]) / "ckpts"))
    local = NoteDataModule(data["raw"], streaming=data["local"], **DM_ARGS)
    remote = NoteDataModule(data["raw"], streaming=URL, streaming_cache=data["cache"], **DM_ARGS)
    for dm in (local, remote):
        dm.attach(module)
        dm.setup("fit")
        dm.setup("test")
    assert remote.val_pairs == local.val_pairs and remote.val_pool_ids == local.val_pool_ids
    assert remote.test_pair_sets() == local.test_pair_sets()
    for loader in ("val_dataloader", "test_dataloader"):
        _assert_same_batches(list(getattr(local, loader)()), list(getattr(remote, loader)()), loader)
    train = [dm.stream.train_loader(dm.processor, 4, 7, shuffle=False) for dm in (local, remote)]
    _assert_same_batches(list(train[0]), list(train[1]), "train")
