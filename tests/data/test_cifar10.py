"""fastnet.data: finding, downloading, extracting, safely unpickling, splitting, normalising."""
from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import http.server
import io
import os
import pickle
import shlex
import shutil
import socket
import struct
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import py2_batch_pickle, write_fake_cifar

from fastnet.data.batches import load_batch, load_label_names
from fastnet.data.cifar10 import Dataset, load_cifar10
from fastnet.data.fetch import (
    ARCHIVE,
    FOLDER,
    OFFICIAL_MD5,
    default_data_dir,
    download_cifar10,
    extract_cifar10,
    find_cifar10,
)
from fastnet.errors import ConfigError, DataError

N = 300   # rows per batch in fake_cifar_dir


# ------------------------------------------------------------------------------- helpers

def make_archive(folder: Path, archive: Path) -> Path:
    """Pack ``folder`` as ``cifar-10-batches-py/`` into a .tar.gz, as the official archive is."""
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname=FOLDER)
    return archive


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Names in ``folder`` that a failed download or extraction might leave behind."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def fake_archive(fake_cifar_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .tar.gz of the fake data set, alone in its folder (do not modify)."""
    return make_archive(fake_cifar_dir / FOLDER, tmp_path_factory.mktemp("archive") / ARCHIVE)


@pytest.fixture()
def fake_copy(fake_cifar_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the fake ``cifar-10-batches-py`` folder, free to damage."""
    return Path(shutil.copytree(fake_cifar_dir / FOLDER, tmp_path / "copy" / FOLDER))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _TruncatingHandler(_QuietHandler):
    """Promises 1000 bytes and sends 10."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")


@contextlib.contextmanager
def http_server(directory: Path, handler: type = _QuietHandler) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 from a thread; yield the base URL."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------------------- finding

def test_default_data_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASTNET_DATA", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "a"
    monkeypatch.delenv("FASTNET_DATA")
    assert default_data_dir() == tmp_path / "xdg" / "fastnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "fastnet"


@pytest.mark.parametrize("form", ["batches folder", "its parent"])
def test_find_accepts_folder_forms(fake_cifar_dir: Path, form: str) -> None:
    given = fake_cifar_dir / FOLDER if form == "batches folder" else fake_cifar_dir
    assert find_cifar10(given) == fake_cifar_dir / FOLDER


def test_find_uses_default_dir(fake_cifar_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTNET_DATA", str(fake_cifar_dir))
    assert find_cifar10() == fake_cifar_dir / FOLDER


def test_find_extracts_archive_once(fake_archive: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(fake_archive, tmp_path / ARCHIVE)
    folder = find_cifar10(tmp_path, md5=md5_of(fake_archive))   # the fake is "official" here
    assert folder == tmp_path / FOLDER
    assert leftovers(tmp_path) == sorted([ARCHIVE, FOLDER])   # no temporary folder remains
    assert load_batch(folder / "test_batch")[0].shape == (N, 3072)
    monkeypatch.setattr(tarfile, "open", None)       # already extracted: not opened again
    assert find_cifar10(tmp_path) == folder


def test_an_archive_named_officially_is_refused_for_its_md5(fake_archive: Path, tmp_path: Path) -> None:
    # a valid archive, but not the official one: its name alone does not make it CIFAR-10
    archive = Path(shutil.copy(fake_archive, tmp_path / ARCHIVE))
    for load in (lambda: load_cifar10(tmp_path), lambda: find_cifar10(tmp_path), lambda: extract_cifar10(archive, tmp_path)):
        with pytest.raises(DataError) as info:
            load()
        msg = str(info.value)
        assert msg.count(". ") == 0 and str(archive) in msg and md5_of(fake_archive) in msg
        assert OFFICIAL_MD5 in msg and "delete it and download it again" in msg
        assert leftovers(tmp_path) == [ARCHIVE]   # nothing extracted, no temporary folder


def test_missing_data_names_every_place(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        find_cifar10(root)
    msg = str(info.value)
    for place in (root, root / FOLDER, root / ARCHIVE):
        assert str(place) in msg
    for hint in ("fastnet download", "--download", "--data-dir", "FASTNET_DATA"):
        assert hint in msg


@pytest.mark.parametrize("given", ["parent", "folder"])
def test_incomplete_folder_names_missing_files(fake_copy: Path, given: str) -> None:
    (fake_copy / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3"):
        find_cifar10(fake_copy.parent if given == "parent" else fake_copy)


# ------------------------------------------------------------------------------- loading, splits

@pytest.mark.parametrize("form", ["batches folder", "its parent", "the archive itself"])
def test_load_from_each_form(fake_cifar_dir: Path, fake_archive: Path, tmp_path: Path,
                             form: str) -> None:
    # a folder holding the archive under the official name: test_find_extracts_archive_once
    # (with the fake's md5) and test_an_archive_named_officially_is_refused_for_its_md5
    if form == "the archive itself":   # any name: the official one would be md5-checked
        given = Path(shutil.copy(fake_archive, tmp_path / "fake-cifar-10.tar.gz"))
    else:
        given = fake_cifar_dir / FOLDER if form == "batches folder" else fake_cifar_dir
    ds = load_cifar10(given, n_val=100)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (5 * N - 100, 100, N)
    assert Path(ds.source).name == FOLDER


def test_split_a3_takes_last_rows_for_validation(fake_cifar_dir: Path) -> None:
    folder = fake_cifar_dir / FOLDER
    ds = load_cifar10(folder, n_val=200, dtype=np.float64)
    X5, y5 = load_batch(folder / "data_batch_5")
    X1, y1 = load_batch(folder / "data_batch_1")
    assert ds.split == "a3" and ds.X_train.shape == (5 * N - 200, 3072)
    np.testing.assert_array_equal(ds.y_val, y5[-200:])
    np.testing.assert_array_equal(ds.y_train[:N], y1)
    np.testing.assert_allclose(ds.X_val, (X5[-200:] - ds.mean) / ds.std, rtol=1e-12, atol=1e-12)


def test_split_a2_is_batch1_train_batch2_val(fake_cifar_dir: Path) -> None:
    folder = fake_cifar_dir / FOLDER
    ds = load_cifar10(folder, split="a2", n_val=12345)   # n_val ignored
    np.testing.assert_array_equal(ds.y_train, load_batch(folder / "data_batch_1")[1])
    np.testing.assert_array_equal(ds.y_val, load_batch(folder / "data_batch_2")[1])
    np.testing.assert_array_equal(ds.y_test, load_batch(folder / "test_batch")[1])
    np.testing.assert_allclose(ds.mean, load_batch(folder / "data_batch_1")[0].mean(axis=0))


def test_n_val_zero_gives_empty_validation(fake_cifar_dir: Path) -> None:
    ds = load_cifar10(fake_cifar_dir, n_val=0)
    assert ds.X_val.shape == (0, 3072) and ds.y_val.shape == (0,)
    assert len(ds.y_train) == 5 * N


@pytest.mark.parametrize("kwargs", [{"n_val": -1}, {"n_val": 5 * N}, {"n_val": 5000},
                                    {"n_val": 2.5}, {"n_val": True}, {"n_val": "10"},
                                    {"split": "a1"}, {"dtype": np.int32}, {"dtype": "nope"}])
def test_bad_configuration_is_one_sentence(fake_cifar_dir: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError) as info:
        load_cifar10(fake_cifar_dir, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_configuration_is_refused_before_looking_for_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_cifar10(tmp_path / "nowhere", split="a1")


# ------------------------------------------------------------------------------- normalisation

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalised_by_training_statistics(fake_cifar_dir: Path, dtype: type) -> None:
    ds = load_cifar10(fake_cifar_dir, n_val=300, dtype=dtype)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for X in (ds.X_train[:], ds.X_val, ds.X_test[:]):   # training and test sets are normalised when read
        assert X.dtype == dtype and X.flags.c_contiguous and X.shape[1] == 3072
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() <= 9
    assert ds.mean.dtype == ds.std.dtype == np.float64 and ds.mean.shape == (3072,)
    np.testing.assert_allclose(ds.X_train[:].mean(axis=0, dtype=np.float64), 0, atol=tol)
    np.testing.assert_allclose(ds.X_train[:].std(axis=0, dtype=np.float64), 1, atol=tol)
    raw_test = load_batch(fake_cifar_dir / FOLDER / "test_batch")[0]
    np.testing.assert_allclose(ds.X_test * ds.std + ds.mean, raw_test, atol=1e-3)
    assert abs(ds.X_val.mean()) > 1e-4   # validation is not re-centred on its own mean


def test_constant_feature_gets_unit_std(fake_copy: Path) -> None:
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        X, y = load_batch(fake_copy / name)
        X[:, 7] = 42
        (fake_copy / name).write_bytes(py2_batch_pickle(X, y))
    ds = load_cifar10(fake_copy, n_val=10)
    assert ds.std[7] == 1.0 and ds.mean[7] == 42.0
    assert np.isfinite(ds.X_train).all() and (ds.X_train[:, 7] == 0).all()


def test_dataset_summary_and_repr(fake_cifar_dir: Path) -> None:
    ds = load_cifar10(fake_cifar_dir, n_val=100)
    assert isinstance(ds, Dataset)
    line = ds.summary()
    assert "\n" not in line and "1400 train" in line and "100 validation" in line
    assert "300 test" in line and "float32" in line and ds.source in line
    assert len(repr(ds)) < 1000   # arrays are left out of the repr


def test_label_names_from_meta_or_defaults(fake_copy: Path) -> None:
    names = load_label_names(fake_copy)
    assert names[0] == "airplane" and names[9] == "truck" and len(names) == 10
    (fake_copy / "batches.meta").unlink()
    assert load_label_names(fake_copy) == names


# ------------------------------------------------------------------------------- downloading

def test_download_file_url_with_md5(fake_archive: Path, tmp_path: Path) -> None:
    path = download_cifar10(tmp_path / "new", url=fake_archive.as_uri(), md5=md5_of(fake_archive),
                            progress=False)
    assert path == tmp_path / "new" / ARCHIVE and md5_of(path) == md5_of(fake_archive)
    assert leftovers(tmp_path / "new") == [ARCHIVE]


def test_find_downloads_and_extracts_when_asked(fake_archive: Path, tmp_path: Path) -> None:
    folder = find_cifar10(tmp_path, download=True, url=fake_archive.as_uri(),
                          md5=md5_of(fake_archive), progress=False)
    assert folder == tmp_path / FOLDER and leftovers(tmp_path) == sorted([ARCHIVE, FOLDER])


def test_download_over_http_with_md5(fake_archive: Path, tmp_path: Path) -> None:
    with http_server(fake_archive.parent) as base:
        path = download_cifar10(tmp_path, url=f"{base}/{ARCHIVE}", md5=md5_of(fake_archive),
                                progress=False)
    assert md5_of(path) == md5_of(fake_archive)


@pytest.mark.parametrize("via", ["file", "http"])
def test_md5_mismatch_leaves_nothing(fake_archive: Path, tmp_path: Path, via: str) -> None:
    wrong = "0" * 32
    with contextlib.ExitStack() as stack:
        url = fake_archive.as_uri()
        if via == "http":
            url = f"{stack.enter_context(http_server(fake_archive.parent))}/{ARCHIVE}"
        with pytest.raises(DataError) as info:
            download_cifar10(tmp_path, url=url, md5=wrong, progress=False)
    assert wrong in str(info.value) and md5_of(fake_archive) in str(info.value)
    assert leftovers(tmp_path) == []


def test_http_errors_name_the_url(tmp_path: Path) -> None:
    with http_server(tmp_path) as base:
        url = f"{base}/absent.tar.gz"
        with pytest.raises(DataError, match="404") as info:
            download_cifar10(tmp_path / "d", url=url, progress=False)
        assert url in str(info.value)
        with http_server(tmp_path, _TruncatingHandler) as short:
            with pytest.raises(DataError, match="10 of 1000 bytes"):
                download_cifar10(tmp_path / "d", url=f"{short}/x", md5=None, progress=False)
    assert leftovers(tmp_path / "d") == []


def test_unreachable_host_names_the_url(tmp_path: Path) -> None:
    with socket.socket() as s:   # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/{ARCHIVE}"
    with pytest.raises(DataError) as info:
        download_cifar10(tmp_path, url=url, progress=False)
    assert url in str(info.value) and leftovers(tmp_path) == []


def test_progress_goes_to_stderr_only_when_asked(fake_archive: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    download_cifar10(tmp_path / "a", url=fake_archive.as_uri(), md5=None, progress=False)
    assert capsys.readouterr() == ("", "")
    download_cifar10(tmp_path / "b", url=fake_archive.as_uri(), md5=None, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "100%" in err and err.endswith("\n")


# ------------------------------------------------------------------------------- hostile pickles

class Payload:
    """Pickles as a call of ``func(*args)``: what a hostile batch file would contain."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    """Calls that each create ``marker`` when unpickled by :func:`pickle.loads`."""
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Payload(os.system, f"touch {shlex.quote(str(marker))}"),
        "builtins.eval": Payload(builtins.eval, code),
        "builtins.exec": Payload(builtins.exec, code),
        "subprocess.call": Payload(subprocess.call, ["touch", str(marker)]),
    }


def hostile_batch(payload: Payload, protocol: int) -> bytes:
    """A batch-shaped dict whose data entry is the payload."""
    return pickle.dumps({b"batch_label": b"x", b"labels": [0], b"data": payload},
                        protocol=protocol)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"])
def test_hostile_pickle_is_refused_and_never_runs(tmp_path: Path, kind: str, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(hostile_batch(payloads(marker)[kind], protocol))
    with pytest.raises(DataError, match="refusing to unpickle") as info:
        load_batch(path)
    assert str(path) in str(info.value) and "only numpy arrays" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"])
def test_hostile_payloads_are_live(tmp_path: Path, kind: str) -> None:
    """Control: plain pickle.loads runs the same bytes and creates the marker."""
    marker = tmp_path / "pwned"
    pickle.loads(hostile_batch(payloads(marker)[kind], 2))
    assert marker.exists()


@pytest.mark.parametrize("name", [b"numpy\nload", b"numpy.testing._private.utils\nrunstring",
                                  b"builtins\ngetattr", b"numpy.core.multiarray\nscalar",
                                  b"copyreg\n_reconstructor", b"numpy\nfromstring"])
def test_only_array_names_are_admitted(tmp_path: Path, name: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"\x80\x02c" + name + b"\n)R.")
    dotted = name.decode().replace("\n", ".")
    with pytest.raises(DataError, match=f"refusing to unpickle {dotted} from"):
        load_batch(path)


def test_hostile_meta_and_batch_inside_a_data_set(fake_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (fake_copy / "batches.meta").write_bytes(hostile_batch(payloads(marker)["builtins.eval"], 2))
    with pytest.raises(DataError, match="refusing"):
        load_label_names(fake_copy)
    (fake_copy / "data_batch_3").write_bytes(hostile_batch(payloads(marker)["os.system"], 2))
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(fake_copy, n_val=10)
    assert not marker.exists()


def test_pickle_cannot_modify_the_admitted_names(tmp_path: Path, fake_cifar_dir: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"\x80\x02cnumpy\ndtype\n}\x8c\x04evil\x88sb.")   # BUILD on numpy.dtype
    with pytest.raises(DataError):
        load_batch(path)
    assert load_batch(fake_cifar_dir / FOLDER / "test_batch")[0].shape == (N, 3072)


def test_huge_memo_index_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "f"   # 9 bytes that would make the C unpickler allocate 16 GB
    path.write_bytes(b"\x80\x02Nr" + struct.pack("<I", 10**9) + b".")
    start = time.perf_counter()
    with pytest.raises(DataError, match="memo index"):
        load_batch(path)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("blob", [
    b"\x80\x04\x8e" + struct.pack("<Q", 20 << 30) + b"x",   # 20 GB of bytes claimed
    b"\x80\x02T" + struct.pack("<i", 2**31 - 1) + b"x",    # 2 GB str claimed
])
def test_huge_claimed_sizes_are_refused(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(blob)
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_batch(path)


# ------------------------------------------------------------------------------- damaged files

def test_load_batch_matches_plain_unpickling(fake_cifar_dir: Path) -> None:
    path = fake_cifar_dir / FOLDER / "data_batch_2"
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")   # trusted here: we wrote it
    X, y = load_batch(path)
    assert X.dtype == np.uint8 and X.flags.c_contiguous and X.flags.writeable
    assert y.dtype == np.int64
    np.testing.assert_array_equal(X, d[b"data"])
    np.testing.assert_array_equal(y, d[b"labels"])


@pytest.mark.parametrize("cut", [0, 1, 2, 30, 120, 400, 5000, -3, -1])
def test_truncated_batch(fake_cifar_dir: Path, tmp_path: Path, cut: int) -> None:
    blob = (fake_cifar_dir / FOLDER / "data_batch_1").read_bytes()
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob[:cut])
    with pytest.raises(DataError, match="data_batch_1"):
        load_batch(path)


@pytest.mark.parametrize("blob", [b"", b"garbage", bytes(range(256)) * 40, b"\x80\x02.",
                                  b"\x80\x02}q\x01.\x00\x00junk", b"\x80\x02]."])
def test_garbage_batch(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "test_batch"
    path.write_bytes(blob)
    with pytest.raises(DataError, match="test_batch"):
        load_batch(path)


def test_flipped_bytes_in_header(fake_cifar_dir: Path, tmp_path: Path) -> None:
    blob = bytearray((fake_cifar_dir / FOLDER / "data_batch_1").read_bytes())
    path = tmp_path / "data_batch_1"
    for i in range(0, 1000, 7):
        damaged = blob.copy()
        damaged[i] ^= 0xFF
        path.write_bytes(damaged)
        try:
            load_batch(path)
        except DataError as exc:
            assert "data_batch_1" in str(exc)


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        load_batch(tmp_path / "absent")
    with pytest.raises(DataError, match="cannot read"):
        load_batch(tmp_path)


GOOD_X = np.zeros((3, 3072), np.uint8)


@pytest.mark.parametrize(("entries", "problem"), [
    ({b"data": np.zeros((3, 3071), np.uint8), b"labels": [0, 1, 2]}, "shape"),
    ({b"data": np.zeros(3072 * 3, np.uint8), b"labels": [0, 1, 2]}, "shape"),
    ({b"data": np.zeros((3, 3072), np.float32), b"labels": [0, 1, 2]}, "float32"),
    ({b"data": np.zeros((3, 3072), np.int16), b"labels": [0, 1, 2]}, "int16"),
    ({b"data": np.zeros((3, 3072), complex), b"labels": [0, 1, 2]}, "dtype"),
    ({b"data": np.zeros((3, 3072), object), b"labels": [0, 1, 2]}, "dtype"),
    ({b"data": GOOD_X.tolist(), b"labels": [0, 1, 2]}, "'data'"),
    ({b"data": GOOD_X, b"labels": [0, 1]}, "3 images but 2 labels"),
    ({b"data": GOOD_X, b"labels": [0, 1, 10]}, "0..9"),
    ({b"data": GOOD_X, b"labels": [0, 1, -1]}, "0..9"),
    ({b"data": GOOD_X, b"labels": [0, 1, 2**70]}, "0..9"),
    ({b"data": GOOD_X, b"labels": ["a", "b", "c"]}, "list of ints"),
    ({b"data": GOOD_X, b"labels": np.zeros(3, np.float64)}, "list of ints"),
    ({b"labels": [0, 1, 2]}, "no 'data'"),
    ({b"data": GOOD_X}, "no 'labels'"),
    ([GOOD_X, [0, 1, 2]], "not a dict"),
])
def test_wrong_structure(tmp_path: Path, entries: object, problem: str) -> None:
    path = tmp_path / "data_batch_4"
    path.write_bytes(pickle.dumps(entries, protocol=2))
    with pytest.raises(DataError, match="data_batch_4") as info:
        load_batch(path)
    assert problem in str(info.value)


@pytest.mark.parametrize("protocol", [2, 3, 4])
@pytest.mark.parametrize("keys", [bytes, str])
def test_python3_pickles_load_too(tmp_path: Path, protocol: int, keys: type) -> None:
    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    y = np.array([0, 9, 3, 3, 1], dtype=">i8")   # a label array, big-endian for good measure
    k = (lambda s: s.encode()) if keys is bytes else (lambda s: s)
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({k("data"): X, k("labels"): y}, protocol=protocol))
    X2, y2 = load_batch(path)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    assert y2.dtype == np.int64


def test_fortran_ordered_data_loads_c_contiguous(tmp_path: Path) -> None:
    X = np.asfortranarray(np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072))
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": X, b"labels": [1, 2]}, protocol=2))
    X2, _ = load_batch(path)
    assert X2.flags.c_contiguous
    np.testing.assert_array_equal(X2, X)


# ------------------------------------------------------------------------------- hostile archives

def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 0
    return info


@pytest.mark.parametrize(("member", "problem"), [
    (_member("../evil"), "unsafe path"),
    (_member(f"{FOLDER}/../../evil"), "unsafe path"),
    (_member("ABSOLUTE"), "unsafe path"),
    (_member(f"{FOLDER}/data_batch_2", tarfile.SYMTYPE, "../../evil"), "link or device"),
    (_member(f"{FOLDER}/data_batch_2", tarfile.SYMTYPE, "/etc/passwd"), "link or device"),
    (_member(f"{FOLDER}/data_batch_2", tarfile.LNKTYPE, f"{FOLDER}/data_batch_1"),
     "link or device"),
    (_member(f"{FOLDER}/tty", tarfile.CHRTYPE), "link or device"),
    (_member(f"{FOLDER}/fifo", tarfile.FIFOTYPE), "link or device"),
    (_member("other/data_batch_1"), f"outside {FOLDER}/"),
    (_member("evil"), f"outside {FOLDER}/"),
], ids=lambda v: getattr(v, "name", v))
def test_hostile_archive_is_refused(fake_cifar_dir: Path, tmp_path: Path,
                                    member: tarfile.TarInfo, problem: str) -> None:
    if member.name == "ABSOLUTE":
        member.name = str(tmp_path / "evil")
    archive = tmp_path / "in" / "hostile.tar.gz"   # the official name: refused for its md5 first
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:   # a good member first, then the bad one
        tar.add(fake_cifar_dir / FOLDER / "data_batch_1", arcname=f"{FOLDER}/data_batch_1")
        tar.addfile(member, io.BytesIO(b"") if member.isfile() else None)
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        extract_cifar10(archive, dest)
    msg = str(info.value)
    assert str(archive) in msg and member.name in msg and problem in msg
    assert leftovers(dest) == []   # neither a folder that looks complete nor a temporary one
    assert not (tmp_path / "evil").exists() and leftovers(tmp_path) == ["dest", "in"]


def test_hostile_archive_found_by_find_cifar10(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / ARCHIVE, "w:gz") as tar:
        tar.addfile(_member("../evil"), io.BytesIO(b""))
    with pytest.raises(DataError, match="refusing to extract"):
        find_cifar10(tmp_path, md5=md5_of(tmp_path / ARCHIVE))   # past the md5, to its members
    assert leftovers(tmp_path) == [ARCHIVE] and not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "incomplete"])
def test_damaged_archive(fake_archive: Path, fake_cifar_dir: Path, tmp_path: Path,
                         damage: str) -> None:
    archive = tmp_path / ARCHIVE
    if damage == "truncated":
        archive.write_bytes(fake_archive.read_bytes()[: fake_archive.stat().st_size // 2])
    elif damage == "garbage":
        archive.write_bytes(b"this is not a gzip file" * 100)
    else:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(fake_cifar_dir / FOLDER / "data_batch_1", arcname=f"{FOLDER}/data_batch_1")
    with pytest.raises(DataError) as info:
        find_cifar10(tmp_path, md5=md5_of(archive))   # past the md5: the damage itself is found
    assert str(archive) in str(info.value) and "md5" not in str(info.value)
    assert leftovers(tmp_path) == [ARCHIVE]


def test_extract_creates_destination(fake_archive: Path, tmp_path: Path) -> None:
    folder = extract_cifar10(fake_archive, tmp_path / "a" / "b", md5=md5_of(fake_archive))
    assert folder == tmp_path / "a" / "b" / FOLDER and (folder / "test_batch").is_file()


def test_write_fake_cifar_is_reproducible(tmp_path: Path) -> None:
    a = write_fake_cifar(tmp_path / "a", n_per_batch=20, seed=5)
    b = write_fake_cifar(tmp_path / "b", n_per_batch=20, seed=5)
    assert a.name == FOLDER
    assert (a / "data_batch_3").read_bytes() == (b / "data_batch_3").read_bytes()
    _, y = load_batch(a / "data_batch_3")
    assert np.bincount(y).tolist() == [2] * 10


# ------------------------------------------------------------------------------- the real data

@pytest.mark.data
def test_real_cifar10_loads_in_seconds(real_cifar_dir: Path) -> None:
    start = time.perf_counter()
    ds = load_cifar10(real_cifar_dir, progress=False)
    seconds = time.perf_counter() - start
    assert (ds.X_train.shape, ds.X_val.shape, ds.X_test.shape) == (
        (45000, 3072), (5000, 3072), (10000, 3072))
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert set(np.unique(y)) == set(range(10))
    assert ds.X_train.dtype == np.float32 and ds.label_names[3] == "cat"
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert seconds < 30, f"loading took {seconds:.1f} s"


@pytest.mark.data
def test_real_batch_matches_plain_unpickling(real_cifar_dir: Path) -> None:
    path = real_cifar_dir / FOLDER / "test_batch"
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")   # trusted here: the local copy
    X, y = load_batch(path)
    np.testing.assert_array_equal(X, d[b"data"])
    np.testing.assert_array_equal(y, d[b"labels"])
