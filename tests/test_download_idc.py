"""IDC as a download source: the real index offline, a local S3 emulator for the transfers.

The bucket is moto's server mode (a real S3 emulator) on 127.0.0.1, laid out as IDC lays
out ``idc-open-data``: one prefix ``<crdc_series_uuid>/`` per series, one object
``<uuid>.dcm`` per instance. The index is a small parquet table with the columns of
``idc-index-data``'s ``idc_index.parquet``. Cuts and kills go through a forwarding proxy.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.download import RetryPolicy, download_idc, plan_idc, series_folder_names
from petcorpus.download.idc import list_prefix, read_index
from petcorpus.download.tree import STAGE
from petcorpus.errors import CorruptFileError, DownloadError, Reason
from petcorpus.pipeline.build import build
from tests._download_server import FakeServer
from tests.conftest import REPO, phantom
from tests.test_download_tcia import FakeNbia, _payload

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

BUCKET = "idc-open-data"
COLLECTION = "fdg_pet_ct_lesions"
POLICY = RetryPolicy(attempts=3, backoff=0.001, timeout=10, sleep=lambda s: None)
FAST = ["--retries", "3", "--backoff", "0", "--timeout", "10", "--no-progress"]
runner = CliRunner()


def _bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _uuid(uid: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, uid))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studies():
    return [
        phantom(seed=41, size="small", index=1),
        phantom(seed=42, size="small", index=2, vendor="ge"),
    ]


@pytest.fixture(scope="module")
def bucket(studies):
    """moto on 127.0.0.1 serving the studies as IDC does; yields (url, truth).

    ``truth``: SeriesInstanceUID → {object key: bytes}. The SEG is uploaded in one
    multipart part, so its ETag (``<md5 of md5s>-1``) is not an MD5, as for IDC's large files.
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=BUCKET)
    public = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
            }
        ],
    }
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public))
    truth: dict[str, dict[str, bytes]] = {}
    for st in studies:
        for modality, datasets in st.series.items():
            prefix = f"{_uuid(str(datasets[0].SeriesInstanceUID))}/"
            objects = {f"{prefix}{_uuid(str(d.SOPInstanceUID))}.dcm": _bytes(d) for d in datasets}
            truth[str(datasets[0].SeriesInstanceUID)] = objects
            for key, data in objects.items():
                if modality == "SEG":
                    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)
                    part = s3.upload_part(
                        Bucket=BUCKET, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=data
                    )
                    s3.complete_multipart_upload(
                        Bucket=BUCKET,
                        Key=key,
                        UploadId=up["UploadId"],
                        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
                    )
                else:
                    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    yield url, truth
    server.stop()


def _index_rows(studies, collection: str = COLLECTION) -> list[dict]:
    rows = []
    for st in studies:
        for modality, datasets in st.series.items():
            ds = datasets[0]
            crdc = _uuid(str(ds.SeriesInstanceUID))
            date = str(ds.StudyDate)
            rows.append(
                {
                    "collection_id": collection,
                    "analysis_result_id": None,
                    "PatientID": st.subject_id,
                    "SeriesInstanceUID": str(ds.SeriesInstanceUID),
                    "StudyInstanceUID": str(ds.StudyInstanceUID),
                    "StudyDate": f"{date[:4]}-{date[4:6]}-{date[6:]}",
                    "StudyDescription": str(getattr(ds, "StudyDescription", "")),
                    "Modality": modality,
                    "SeriesDescription": str(getattr(ds, "SeriesDescription", "")),
                    "SeriesNumber": str(ds.SeriesNumber),
                    "instanceCount": len(datasets),
                    "license_short_name": "CC BY 4.0",
                    "aws_bucket": BUCKET,
                    "crdc_series_uuid": crdc,
                    "series_aws_url": f"s3://{BUCKET}/{crdc}/*",
                    "series_size_MB": sum(len(_bytes(d)) for d in datasets) / 1e6,
                }
            )
    return rows


@pytest.fixture(scope="module")
def index(studies, tmp_path_factory) -> Path:
    """A small index with idc_index.parquet's columns, plus rows that must be left out."""
    rows = _index_rows(studies)
    other = dict(rows[0], collection_id="other_collection", SeriesInstanceUID="1.2.3.9")
    analysis = dict(rows[1], analysis_result_id="some_ai_results", SeriesInstanceUID="1.2.3.8")
    path = tmp_path_factory.mktemp("idc") / "idc_index.parquet"
    pq.write_table(pa.Table.from_pylist([*rows, other, analysis]), path)
    return path


class Proxy:
    """Forwards GETs to the bucket; can cut one object after n bytes.

    ``cut[path] = n``: send the headers and n bytes, then drop the connection (once).
    ``log``: every request as (path, Range header or None).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.cut: dict[str, int] = {}
        self.log: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self, path: str) -> list[str | None]:
        with self._lock:
            return [rng for p, rng in self.log if p == path]

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        headers = {k: v for k in ("Range", "If-Range") if (v := h.headers.get(k))}
        with self._lock:
            self.log.append((h.path, h.headers.get("Range")))
            cut = self.cut.pop(h.path, None)
        req = urllib.request.Request(self.upstream + h.path, headers=headers)
        try:
            resp = urllib.request.urlopen(req, timeout=10)
        except urllib.error.HTTPError as exc:
            resp = exc
        body = resp.read()
        try:
            h.send_response(resp.status)
            for k in ("Content-Type", "ETag", "Content-Range", "Accept-Ranges", "Last-Modified"):
                if resp.headers.get(k):
                    h.send_header(k, resp.headers[k])
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if cut is None:
                h.wfile.write(body)
                return
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            h.close_connection = True


@pytest.fixture
def proxy(bucket):
    with Proxy(bucket[0]) as p:
        yield p


def _check_tree(dest: Path, truth: dict[str, dict[str, bytes]]) -> None:
    """Every series in the TCIA-style tree, named from its header, bytes equal to the bucket."""
    got: dict[str, set[str]] = defaultdict(set)
    for f in sorted(dest.rglob("*.dcm")):
        rel = f.relative_to(dest).parts
        assert rel[0] != STAGE, f"left in staging: {f}"
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert rel[:3] == series_folder_names(ds)
        assert rel[3] == f"1-{int(ds.InstanceNumber):03d}.dcm"
        got[str(ds.SeriesInstanceUID)].add(hashlib.sha256(f.read_bytes()).hexdigest())
    want = {
        uid: {hashlib.sha256(b).hexdigest() for b in objects.values()}
        for uid, objects in truth.items()
    }
    assert got == want


def test_plan_reads_the_index_offline(index, studies) -> None:
    rows = read_index(COLLECTION, index=index)
    assert len(rows) == 6  # the other collection and the analysis result are left out
    plan = plan_idc("no-such-dest", collection=COLLECTION, index=index)
    n_files = sum(len(d) for st in studies for d in st.series.values())
    assert plan.collection_counts["patients"] == 2 and plan.collection_counts["studies"] == 2
    assert plan.collection_counts["series"] == 6 and plan.collection_counts["files"] == n_files
    ge = studies[1].subject_id
    sub = plan_idc("x", collection=COLLECTION, index=index, subjects=[ge], modalities=["pt"])
    assert [(r["PatientID"], r["Modality"]) for r in sub.series] == [(ge, "PT")]
    assert len(plan_idc("x", collection=COLLECTION, index=index, limit=4).series) == 4
    assert not Path("no-such-dest").exists() and not Path("x").exists()


def test_dry_run_prints_counts_without_network(index, studies, tmp_path) -> None:
    n_files = sum(len(d) for st in studies for d in st.series.values())
    dest = tmp_path / "fdg"
    res = runner.invoke(
        app,
        [
            "download", "autopet", str(dest), "--source", "idc", "--idc-index", str(index),
            "--idc-endpoint", "http://127.0.0.1:9", "--dry-run", "--modality", "CT",
            "--modality", "PT",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"2 patients, 2 studies, 6 series, {n_files} files" in res.output
    assert f"selected: 2 patients, 2 studies, 4 series, {n_files - 2} files" in res.output
    assert res.output.count("fetch   ") == 4 and not dest.exists()


def test_bad_index_is_one_line_naming_the_file(tmp_path) -> None:
    bad = tmp_path / "index.parquet"
    bad.write_text("not parquet")
    with pytest.raises(CorruptFileError, match=r"index\.parquet"):
        read_index(COLLECTION, index=bad)
    pq.write_table(pa.Table.from_pylist([{"collection_id": COLLECTION}]), bad)
    with pytest.raises(CorruptFileError, match="no column PatientID"):
        read_index(COLLECTION, index=bad)
    res = runner.invoke(
        app, ["download", "psma", str(tmp_path / "p"), "--source", "idc", "--idc-index", str(bad)]
    )
    assert res.exit_code == 1 and "index.parquet" in res.output and "Traceback" not in res.output


def test_unknown_collection_is_no_series(index) -> None:
    with pytest.raises(DownloadError) as info:
        read_index("psma_pet_ct_lesions", index=index)
    assert info.value.reason is Reason.NO_SERIES


def test_listing_follows_continuation_tokens(bucket) -> None:
    url, truth = bucket
    objects = next(o for o in truth.values() if len(o) > 10)
    prefix = next(iter(objects)).split("/")[0] + "/"
    listed = list_prefix(BUCKET, prefix, endpoint=url, policy=POLICY, max_keys=7)
    assert sorted(o.key for o in listed) == sorted(objects)
    assert {o.key: o.size for o in listed} == {k: len(b) for k, b in objects.items()}
    assert all(o.md5 == hashlib.md5(objects[o.key]).hexdigest() for o in listed)


def test_download_equals_the_bucket_and_reruns_fetch_nothing(bucket, proxy, index, tmp_path):
    _, truth = bucket
    dest = tmp_path / "fdg"
    report = download_idc(
        dest, collection=COLLECTION, index=index, endpoint=proxy.url, policy=POLICY
    )
    assert report.ok, report.failed
    assert len(report.done) == 6 and report.bytes_transferred > 0
    _check_tree(dest, truth)
    assert not any((dest / STAGE / "idc").iterdir())
    n_requests = len(proxy.log)
    again = download_idc(
        dest, collection=COLLECTION, index=index, endpoint=proxy.url, policy=POLICY
    )
    assert again.done == [] and len(again.skipped) == 6
    assert len(proxy.log) == n_requests  # finished series: not even listed again


def test_cut_connection_resumes_with_range(bucket, proxy, index, tmp_path) -> None:
    _, truth = bucket
    pet = truth[str(phantom(seed=41, size="small", index=1).pet[0].SeriesInstanceUID)]
    key, data = next(iter(pet.items()))
    path = f"/{BUCKET}/{key}"
    proxy.cut[path] = len(data) // 3
    dest = tmp_path / "fdg"
    report = download_idc(
        dest, collection=COLLECTION, index=index, endpoint=proxy.url, policy=POLICY
    )
    assert report.ok, report.failed
    assert proxy.gets(path) == [None, f"bytes={len(data) // 3}-"]
    _check_tree(dest, truth)


def test_failed_series_is_reported_and_the_rest_goes_on(bucket, index, tmp_path) -> None:
    url, _ = bucket
    rows = _index_rows([phantom(seed=41, size="small", index=1)])
    rows[0]["series_aws_url"] = f"s3://{BUCKET}/no-such-series/*"
    broken = tmp_path / "index.parquet"
    pq.write_table(pa.Table.from_pylist(rows), broken)
    report = download_idc(tmp_path / "d", collection=COLLECTION, index=broken, endpoint=url)
    assert list(report.failed) == ["idc/no-such-series"]
    assert report.failed["idc/no-such-series"].reason is Reason.NO_SERIES
    assert len(report.done) == 2


def test_kill_9_mid_object_then_resume_and_build(bucket, proxy, index, tmp_path) -> None:
    """A download process killed with half a file on disk resumes at the byte it had; the
    tree then builds.

    The proxy cuts the file after n bytes and the process, told to wait a minute before
    its retry, is killed while it waits: ``.part`` holds n bytes, the ledger the files
    before it.
    """
    _, truth = bucket
    study = phantom(seed=41, size="small", index=1)
    ct = truth[str(study.ct[0].SeriesInstanceUID)]
    keys = sorted(ct)
    first, victim = keys[0], keys[1]
    n = len(ct[victim]) // 2
    path = f"/{BUCKET}/{victim}"
    proxy.cut[path] = n
    dest = tmp_path / "fdg"
    cmd = [
        sys.executable, "-m", "petcorpus.cli", "download", "autopet", str(dest),
        "--source", "idc", "--idc-index", str(index), "--idc-endpoint", proxy.url,
        "--subjects", study.subject_id, "--modality", "CT", "-j", "1",
        "--retries", "3", "--backoff", "60", "--timeout", "10", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    part = dest / STAGE / "idc" / f"{victim}.part"
    deadline = time.monotonic() + 120
    try:
        while not (part.exists() and part.stat().st_size == n):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the download never reached the cut file"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not list(dest.glob("PETCT_*"))  # nothing placed: the series was incomplete
    report = download_idc(
        dest, collection=COLLECTION, index=index, endpoint=proxy.url, policy=POLICY, workers=1
    )
    assert report.ok, report.failed
    assert proxy.gets(path) == [None, f"bytes={n}-"]  # resumed at the byte it had
    assert proxy.gets(f"/{BUCKET}/{first}") == [None]  # complete before the kill: kept
    _check_tree(dest, truth)
    built = build(dest, tmp_path / "corpus", workers=1)
    assert built.failed == []
    want = {st.study_uid for st in (study, phantom(seed=42, size="small", index=2, vendor="ge"))}
    assert {o.study_uid for o in built.done} == want


@pytest.mark.parametrize(
    ("target", "collection", "counts"),
    [
        ("autopet", "fdg_pet_ct_lesions", "900 patients, 1014 studies, 3042 series"),
        ("psma", "psma_pet_ct_lesions", "378 patients, 597 studies, 1791 series"),
    ],
)
def test_dry_run_on_the_real_index_prints_the_collections_counts(
    target, collection, counts, tmp_path
) -> None:
    """The installed idc-index-data, offline (the endpoint is a closed port)."""
    pytest.importorskip("idc_index_data", reason="idc-index-data (petcorpus[idc]) not installed")
    dest = tmp_path / target
    args = ["download", target, str(dest), "--source", "idc", "--dry-run"]
    res = runner.invoke(app, [*args, "--idc-endpoint", "http://127.0.0.1:9"])
    assert res.exit_code == 0, res.output
    summary = res.output.splitlines()[-3]
    assert summary.startswith(f"{collection} (IDC index ") and counts in summary
    assert not dest.exists()
    total = plan_idc(dest, collection=collection).collection_counts
    assert total["series"] == 3 * total["studies"]  # CT, PT and SEG
    low, high = (300e9, 600e9) if target == "autopet" else (50e9, 200e9)
    assert low < total["bytes"] < high
    assert 150 < total["files"] / total["studies"] < 1500


def test_missing_index_package_says_how_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "idc_index_data", None)  # import fails
    res = runner.invoke(app, ["download", "psma", str(tmp_path / "p"), "--source", "idc"])
    assert res.exit_code == 1
    assert "idc-index-data" in res.output and "pip install 'petcorpus[idc]'" in res.output
    assert "Traceback" not in res.output


def test_psma_from_tcia_asks_nbia_for_the_psma_collection(tmp_path) -> None:
    """``download psma`` without ``--source idc``: NBIA, collection PSMA-PET-CT-Lesions."""
    with FakeServer() as server:
        nbia = FakeNbia(server, _payload([phantom(seed=41, size="small", index=1)]))
        q = urllib.parse.urlencode({"Collection": "PSMA-PET-CT-Lesions", "format": "json"})
        server.files[f"/nbia/v1/getSeries?{q}"] = json.dumps(nbia.rows).encode()
        dest = tmp_path / "psma"
        res = runner.invoke(
            app,
            ["download", "psma", str(dest), "--nbia-url", nbia.base, "--modality", "PT", *FAST],
        )
        assert res.exit_code == 0, res.output
        assert "done 1," in res.output
        assert [g[1] for g in server.gets() if "getSeries" in g[1]] == [f"/nbia/v1/getSeries?{q}"]
        assert not any("clinical" in g[1] for g in server.gets())
    pet = phantom(seed=41, size="small", index=1).pet
    files = sorted(dest.glob("PETCT_*/*/*/*.dcm"))
    assert len(files) == len(pet)
    assert {pydicom.dcmread(f, stop_before_pixels=True).Modality for f in files} == {"PT"}


@pytest.mark.parametrize("source", ["idc", "tcia"])
def test_psma_refuses_a_file_as_destination(source, index, tmp_path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    args = ["download", "psma", str(afile), "--source", source, "--idc-index", str(index)]
    res = runner.invoke(app, [*args, "--dry-run"])
    assert res.exit_code == 1 and "afile" in res.output and "Traceback" not in res.output
    assert afile.read_text() == "keep me"
