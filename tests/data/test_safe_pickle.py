import collections
import os
import pickle
import struct

import numpy as np
import pytest

from balm.data.errors import DataError
from balm.data.safe_pickle import safe_load, safe_loads


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_and_containers_round_trip(tmp_path, protocol):
    obj = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "t": np.arange(6).reshape(2, 3).T,  # non-contiguous
        "big": np.array([1.0, -2.5], dtype=">f8"),
        "s": np.array(["ab", "c"]),
        "scalar": np.float64(2.5),
        "i": np.int64(-3),
        "dt": np.dtype("int16"),
        "ids": {"x", "y"},
        "fz": frozenset([1]),
        "od": collections.OrderedDict(b=[1, 2], a=(3, None)),
        "dd": collections.defaultdict(list, {"k": [True, False]}),
        "raw": b"\x00\xff",
        "nums": [1, 2.5, 3j, "txt"],
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    got = safe_load(path)
    assert set(got) == set(obj)
    for k in ("a", "t", "big", "s"):
        np.testing.assert_array_equal(got[k], obj[k])
        # (numpy itself restores a byte-swapped dtype as native under protocol 2)
        assert got[k].dtype.kind == obj[k].dtype.kind and got[k].dtype.itemsize == obj[k].dtype.itemsize
    assert got["scalar"] == 2.5 and isinstance(got["scalar"], np.float64)
    assert got["i"] == -3 and got["dt"] == np.dtype("int16")
    assert got["ids"] == {"x", "y"} and got["fz"] == frozenset([1])
    assert list(got["od"].items()) == [("b", [1, 2]), ("a", (3, None))]
    assert got["dd"]["k"] == [True, False] and got["dd"]["new"] == []
    assert got["raw"] == b"\x00\xff" and got["nums"] == [1, 2.5, 3j, "txt"]


class _SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload, refused", [(_SystemPayload, "system'"), (_EvalPayload, "eval'")])
@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, refused, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    # hidden inside an otherwise normal feature dict
    path.write_bytes(pickle.dumps({"text": {"d1": [np.zeros(3)]}, "x": payload(marker)}, protocol=protocol))
    with pytest.raises(DataError) as err:
        safe_load(path)
    msg = str(err.value)
    assert str(path) in msg and refused in msg and "refused" in msg
    assert not marker.exists()


def test_object_array_cannot_smuggle_a_payload(tmp_path):
    marker = tmp_path / "pwned"
    arr = np.empty(1, dtype=object)
    arr[0] = _SystemPayload(marker)
    with pytest.raises(DataError, match="system"):
        safe_loads(pickle.dumps(arr, protocol=2), source="arr.pkl")
    assert not marker.exists()


def test_other_classes_are_refused_by_name():
    with pytest.raises(DataError, match=r"collections\.Counter"):
        safe_loads(pickle.dumps(collections.Counter("aab")), source="c.pkl")


def _py2_array_pickle(values: np.ndarray) -> bytes:
    """A numpy float64 vector pickled the way Python 2 did (protocol 2, data as a py2 `str`)."""
    raw = values.astype("<f8").tobytes()
    out = b"\x80\x02"
    out += b"cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85U\x01b\x87R"
    out += b"(K\x01" + b"K" + bytes([len(values)]) + b"\x85"
    out += b"cnumpy\ndtype\nU\x02f8K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89T" + struct.pack("<I", len(raw)) + raw + b"tb"
    # wrap in a set of py2 `str` ids to exercise __builtin__ names as well
    out = b"\x80\x02(" + out[2:] + b"c__builtin__\nset\n]U\x03Sesa\x85R" + b"t."
    return out


def test_python2_pickle_with_latin1_payload(tmp_path):
    values = np.array([1.5, -2.0, 1e-3, 7.0])  # 1.5 holds byte 0xf8: not ASCII
    assert any(b > 127 for b in values.tobytes())
    path = tmp_path / "py2.pkl"
    path.write_bytes(_py2_array_pickle(values))
    arr, ids = safe_load(path)
    np.testing.assert_array_equal(arr, values)
    assert ids == {"Ses"}


def test_damaged_pickle_names_the_file(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(100)})[:50])
    with pytest.raises(DataError, match="cut.pkl.*not a readable pickle"):
        safe_load(path)
    with pytest.raises(DataError, match="not found"):
        safe_load(tmp_path / "nope.pkl")
