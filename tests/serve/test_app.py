"""The viewer's API through Starlette's test client: the token, the case index, detection,
volumes and lesions, downloads, and every refusal a request can meet."""

import io
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient
from viewer_data import SHAPE, write_case

import anodiff.serve.worker
from anodiff.data.io import read_image
from anodiff.errors import AnodiffError
from anodiff.serve.app import make_app
from anodiff.serve.server import open_session, serve
from anodiff.serve.uploads import Limits
from anodiff.workflows.detect import detect_inputs

TOKEN = "test-token"
HEADERS = {"X-Anodiff-Token": TOKEN}


@pytest.fixture
def client(viewer_run: tuple[Path, Path], tmp_path: Path):
    run, data = viewer_run
    outside = write_case(tmp_path / "elsewhere", "outside", 9, lesion=True)
    linked = tmp_path / "data"
    shutil.copytree(data, linked)
    (linked / "outside").symlink_to(outside, target_is_directory=True)
    session = open_session(run, linked, device="cpu", token=TOKEN,
                           limits=Limits(upload_bytes=2_000_000, zip_members=20,
                                         unpacked_bytes=3_000_000, dicom_files=10))
    with TestClient(make_app(session)) as test_client:
        test_client.session = session
        yield test_client
    session.close()
    assert not session.uploads.parent.exists()  # the private folder goes with the server


def detected(client: TestClient, key: str) -> dict:
    client.post(f"/api/cases/{key}", headers=HEADERS)
    job = client.session.worker.job(key)
    assert job.done.wait(120)
    body = client.get(f"/api/cases/{key}", headers=HEADERS).json()
    assert body["state"] == "done", body
    return body


def test_every_request_needs_the_session_token(client: TestClient) -> None:
    assert client.get("/").status_code == 403
    assert client.get("/?token=wrong").status_code == 403
    assert client.get("/api/cases", headers={"X-Anodiff-Token": "x"}).status_code == 403
    assert client.get("/static/viewer.js").status_code == 403
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and f'content="{TOKEN}"' in page.text
    assert client.get(f"/static/viewer.js?token={TOKEN}").status_code == 200


def test_cases_are_listed_by_id_and_links_out_of_data_left_out(client: TestClient) -> None:
    cases = client.get("/api/cases", headers=HEADERS).json()
    assert sorted(c["name"] for c in cases) == ["sick", "well"]
    assert all(c["id"].startswith("c") and c["state"] == "new" for c in cases)


@pytest.mark.parametrize("path", [
    "/api/cases/../../etc/passwd", "/api/cases/%2e%2e%2fetc%2fpasswd", "/api/cases/c99",
    "/api/cases/c1/volume/..%2f..%2fetc", "/api/cases/c1/files/99", "/api/cases/c1/files/-1",
    "/static/..%2fapp.py", "/static/index.html"])
def test_no_request_reaches_the_file_system(client: TestClient, path: str) -> None:
    response = client.get(path, headers=HEADERS)
    assert response.status_code == 404, (path, response.text)


def test_detection_volumes_lesions_and_downloads(client: TestClient) -> None:
    sick = next(c for c in client.get("/api/cases", headers=HEADERS).json()
                if c["name"] == "sick")
    meta = detected(client, sick["id"])["meta"]
    assert meta["volumetric"] and sorted(meta["shape"]) == sorted(SHAPE)
    assert {"image", "anomaly_map", "mask"} <= set(meta["kinds"])
    raw = client.get(f"/api/cases/{sick['id']}/volume/anomaly_map", headers=HEADERS).content
    volume = np.frombuffer(raw, dtype="<f4").reshape(meta["shape"])
    assert np.isfinite(volume).all() and volume.max() > 0
    assert meta["lesions"], "the bright block is a lesion"
    big = meta["lesions"][0]
    assert volume[tuple(big["voxel"])] > np.median(volume[volume > 0])
    names = [f["name"] for f in meta["files"]]
    assert "sick_lesions.csv" in names and "scores.csv" in names
    number = names.index("sick_lesions.csv")
    text = client.get(f"/api/cases/{sick['id']}/files/{number}?token={TOKEN}").text
    assert text.startswith("lesion,voxels,volume_ml")
    assert client.post(f"/api/cases/{sick['id']}", headers=HEADERS).json()["state"] == "done"


def zipped(members: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():  # a fixed date: the same bytes on every run
            archive.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_the_worker_loads_the_model_once_and_detects_as_detect_does(
        client: TestClient, viewer_run: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []
    load_run = anodiff.serve.worker.load_run
    monkeypatch.setattr(anodiff.serve.worker, "load_run",
                        lambda *args: loads.append(args) or load_run(*args))
    cases = {c["name"]: c["id"] for c in client.get("/api/cases", headers=HEADERS).json()}
    for name in ("sick", "well"):
        detected(client, cases[name])
    assert len(loads) == 1
    run, data = viewer_run
    alone = detect_inputs(run, [data / "well"], tmp_path / "alone", progress=False,
                          device="cpu")
    assert alone.rows[0].status == "ok"
    served = client.session.worker.job(cases["well"]).out / "well_anomaly_map.nii.gz"
    np.testing.assert_array_equal(read_image(served).array,
                                  read_image(tmp_path / "alone" / "well_anomaly_map.nii.gz").array)


def test_an_uploaded_case_folder_is_indexed_and_detected(client: TestClient,
                                                         tmp_path: Path) -> None:
    folder = write_case(tmp_path / "up", "mine", 3, lesion=True)
    archive = zipped({f"mine/{p.name}": p.read_bytes() for p in folder.iterdir()})
    added = client.post("/api/upload?name=mine.zip", content=archive, headers=HEADERS)
    assert added.status_code == 200, added.text
    (case,) = added.json()
    assert case["name"] == "mine"
    assert detected(client, case["id"])["meta"]["lesions"]


REFUSED_UPLOADS = [  # name, body, the refusal it must get
    ("x.exe", b"MZ", "send one of .nii.gz"),
    ("big.nii.gz", b"0" * 2_000_001, "larger than the limit of 2000000 bytes"),
    ("slip.zip", zipped({"../evil.nii.gz": b"x"}), "leaving the archive's folder"),
    ("abs.zip", zipped({"/etc/evil.nii.gz": b"x"}), "an absolute path"),
    ("link.zip", zipped({"a.txt": b"x"}, link="case/link.nii.gz"), "a symbolic link"),
    ("many.zip", zipped({f"f{i}.txt": b"x" for i in range(21)}), "21 files, more than"),
    ("bomb.zip", zipped({"a.nii.gz": b"\0" * 3_000_001}), "unpacks to more than the limit"),
    ("broken.zip", b"PK\x03\x04 not really", "not a readable zip"),
    ("empty.nii.gz", b"", "empty"),
]


# Ids by name: pytest would otherwise spell out every body, and a zip's bytes in an id
# once made two xdist workers collect different tests.
@pytest.mark.parametrize(("name", "body", "message"), REFUSED_UPLOADS,
                         ids=[name for name, _, _ in REFUSED_UPLOADS])
def test_uploads_are_refused_with_one_line(client: TestClient, name: str, body: bytes,
                                           message: str) -> None:
    response = client.post(f"/api/upload?name={name}", content=body, headers=HEADERS)
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_another_address_than_loopback_needs_allow_remote(viewer_run: tuple[Path, Path]
                                                          ) -> None:
    with pytest.raises(AnodiffError, match="listens on 127.0.0.1 unless you add "
                                           "--allow-remote"):
        serve(viewer_run[0], None, host="0.0.0.0")
    with pytest.raises(AnodiffError, match="--data must be a folder of cases"):
        open_session(viewer_run[0], viewer_run[0] / "run.yaml")
