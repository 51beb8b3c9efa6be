"""``balm data fetch``: pinned URLs, checksums, nothing left behind (no network: mirror or a fake download)."""

from __future__ import annotations

import os
import shutil

import pytest

from balm.cli.main import main
from balm.data.builders import cmu_mosi, fetchable
from balm.data.builders.sources import RemoteFile, fetch_files, sha256_bytes
from balm.data.errors import DataError
from real_data import real_folder


def test_urls_are_raw_files_at_the_pinned_commits():
    urls = {f.name: f.url for f in cmu_mosi.REMOTE_FILES}
    assert set(urls) == set(cmu_mosi.SHA256)
    assert urls["audio_train0.csv"] == ("https://raw.githubusercontent.com/declare-lab/multimodal-deep-learning/"
                                        "111b401d867c14a1dcd930fd2b2ab58a5eca3f70/bc-LSTM/data/audio/audio_train0.csv")
    assert urls["transcripts.csv"].endswith("111b401d867c14a1dcd930fd2b2ab58a5eca3f70/bc-LSTM/data/transcripts.csv")
    assert urls["CMUMOSI_features_raw_2way.pkl"] == (
        "https://raw.githubusercontent.com/zeroQiaoba/GCNet/8cce4a0c9a50172abfa79971e77c71c40c1d733d/"
        "dataset/CMUMOSI/CMUMOSI_features_raw_2way.pkl")
    assert "cmu-mosi" in fetchable()


def test_fetch_from_mirror_gives_the_release_folder(tmp_path, capsys):
    src = real_folder("cmu-mosi")
    out = tmp_path / "mosi"
    assert main(["data", "fetch", "cmu-mosi", "--out", str(out), "--mirror", str(src)]) == 0
    assert sorted(os.listdir(out)) == sorted(os.listdir(src))
    for name in os.listdir(src):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    assert main(["data", "build", "cmu-mosi", "--source", str(out), "--out", str(tmp_path / "ds")]) == 0


def test_fetch_mirror_in_repository_layout(tmp_path):
    src = real_folder("cmu-mosi")
    mirror = tmp_path / "clone"
    for f in cmu_mosi.REMOTE_FILES:
        (mirror / f.repo_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / f.name, mirror / f.repo_path)
    out = fetch_files(cmu_mosi.REMOTE_FILES, tmp_path / "out", mirror=mirror)
    assert (tmp_path / "out" / "SHA256SUMS").read_bytes() == (src / "SHA256SUMS").read_bytes()
    assert os.path.basename(out) == "out"


def _files(tmp_path, contents: dict[str, bytes]):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    files = []
    for name, data in contents.items():
        (mirror / name).write_bytes(data)
        files.append(RemoteFile(name, f"https://example.invalid/{name}", sha256_bytes(data)))
    return mirror, files


def test_changed_byte_in_mirror_is_refused_leaving_nothing(tmp_path, capsys):
    mirror, files = _files(tmp_path, {"a.csv": b"1,2,3\n", "b.csv": b"4,5,6\n"})
    (mirror / "b.csv").write_bytes(b"4,5,7\n")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match=r"b\.csv.*SHA-256"):
        fetch_files(files, work / "out", mirror=mirror)
    assert os.listdir(work) == []


def test_download_path_verifies_and_cleans_up(tmp_path):
    mirror, files = _files(tmp_path, {"a.csv": b"abc", "b.csv": b"def"})
    seen = []

    def fake_download(url, dest, timeout):
        seen.append(url)
        shutil.copyfile(mirror / url.rsplit("/", 1)[1], dest)

    out = fetch_files(files, tmp_path / "ok", download=fake_download)
    assert seen == ["https://example.invalid/a.csv", "https://example.invalid/b.csv"]
    assert (tmp_path / "ok" / "SHA256SUMS").read_text() == "".join(f"{f.sha256}  {f.name}\n" for f in files)
    assert os.path.isdir(out)

    def failing(url, dest, timeout):
        if url.endswith("b.csv"):
            raise OSError("connection refused")
        fake_download(url, dest, timeout)

    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match="b.csv: download failed: connection refused"):
        fetch_files(files, work / "out", download=failing)
    assert os.listdir(work) == []


def test_refuses_non_empty_out_and_missing_mirror_file(tmp_path):
    mirror, files = _files(tmp_path, {"a.csv": b"abc"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing to overwrite"):
        fetch_files(files, out, mirror=mirror)
    assert os.listdir(out) == ["keep.txt"]
    os.remove(mirror / "a.csv")
    with pytest.raises(DataError, match="'a.csv' is not in the mirror"):
        fetch_files(files, tmp_path / "new", mirror=mirror)
    assert not (tmp_path / "new").exists()


def test_real_data_tests_skip_with_the_reason_when_the_folder_is_absent(tmp_path, monkeypatch, capsys):
    import real_data

    monkeypatch.setattr(real_data, "SHARED", tmp_path / "nowhere")
    with pytest.raises(pytest.skip.Exception, match="real data not found: .*nowhere/cmu-mosi is absent"):
        real_data.real_folder("cmu-mosi")
    assert "real data not found" in capsys.readouterr().out
