"""fastnet.util.reader: regular files only, within their kind's cap; errors of the caller's class."""
from __future__ import annotations

import os
import socket

import pytest

from fastnet.errors import DataError, FastnetError
from fastnet.util import reader
from fastnet.util.reader import open_regular, read_bytes, read_text


def test_a_regular_file_and_a_link_to_one_are_read(tmp_path):
    (tmp_path / "f.json").write_text('{"a": 1}')
    (tmp_path / "link.json").symlink_to(tmp_path / "f.json")
    assert read_text(tmp_path / "f.json", "json") == '{"a": 1}'
    assert read_bytes(tmp_path / "link.json", "json") == b'{"a": 1}'
    with open_regular(tmp_path / "f.json", "json") as f:
        assert f.read() == b'{"a": 1}'


def test_a_file_at_the_cap_is_read_and_one_byte_more_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(reader.CAPS, "json", 8)
    (tmp_path / "ok").write_bytes(b"x" * 8)
    (tmp_path / "big").write_bytes(b"x" * 9)
    assert read_bytes(tmp_path / "ok", "json") == b"x" * 8
    with pytest.raises(FastnetError, match="more than the 8"):
        read_bytes(tmp_path / "big", "json")


def test_a_missing_file_stays_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "nothing", "json")


@pytest.mark.parametrize("special, says", [("fifo", r"a FIFO \(named pipe\)"), ("dir", "a folder"), ("/dev/zero", "a character device"),
                                           ("socket", "a socket")])
def test_special_files_are_refused_without_blocking(special, says, tmp_path):
    path = tmp_path / "x"
    if special == "fifo":
        os.mkfifo(path)
    elif special == "dir":
        path.mkdir()
    elif special == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
    else:
        path.symlink_to(special)
    with pytest.raises(DataError, match=f"{says}, not a regular file"):
        read_bytes(path, "batch", DataError)


def test_a_nul_in_the_path_and_undecodable_text_are_the_callers_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        read_bytes(str(tmp_path / "a\x00b"), "json", ValueError)
    (tmp_path / "latin").write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_text(tmp_path / "latin", "json", ValueError)


def test_an_unreadable_file_is_one_sentence(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    (tmp_path / "locked").write_text("x")
    (tmp_path / "locked").chmod(0)
    with pytest.raises(FastnetError, match="cannot read"):
        read_bytes(tmp_path / "locked", "json")
