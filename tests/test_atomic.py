"""Tests for mark2_lib.atomic: a write that dies half way leaves the old file and no temp file."""
from pathlib import Path

import pytest
import torch

from mark2_lib.atomic import atomic_save, atomic_write, atomic_write_text


class Crash(BaseException):
    """Not an Exception: stands in for KeyboardInterrupt or SystemExit in the middle of a write."""


def crash_half_way(data):
    def write(f):
        f.write(data[: len(data) // 2])
        f.flush()
        raise Crash("died mid-write")
    return write


@pytest.mark.parametrize("mode,old,new", [("wb", b"old bytes\x00\xff", b"new bytes " * 1000),
                                          ("w", "old text\n", "new text\n" * 1000)], ids=["binary", "text"])
def test_crash_mid_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, mode, old, new):
    path = tmp_path / "file.dat"
    atomic_write(path, lambda f: f.write(old), mode=mode)
    before = path.read_bytes()
    with pytest.raises(Crash, match="died mid-write"):
        atomic_write(path, crash_half_way(new), mode=mode)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["file.dat"]


def test_crash_on_first_write_leaves_nothing(tmp_path):
    def write(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "new.bin", write)
    assert list(tmp_path.iterdir()) == []


def test_write_goes_to_a_temp_file_in_the_same_folder_then_replaces(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("old")
    seen = {}

    def write(f):
        f.write("new content")
        f.flush()
        seen["tmp"] = f.name
        seen["during"] = path.read_text()  # a reader meanwhile still sees the whole old file

    assert atomic_write(path, write, mode="w") == path
    assert seen["during"] == "old" and path.read_text() == "new content"
    assert Path(seen["tmp"]).parent == tmp_path and Path(seen["tmp"]) != path  # os.replace stays on one disk
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_atomic_write_text_replaces_content(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text("first, longer content\n", path)
    atomic_write_text("second\n", path)
    assert path.read_text() == "second\n"  # replaced, not overwritten in place (no tail of the first)


def test_atomic_save_round_trips_with_weights_only_and_creates_the_folder(tmp_path):
    obj = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "epoch": 3, "finished": False,
           "history": [{"lr": 0.02, "val_total": float("nan")}], "name": "run", "none": None}
    path = tmp_path / "a" / "b" / "last.pt"
    assert atomic_save(obj, path) == path
    back = torch.load(path, map_location="cpu", weights_only=True)
    assert back.keys() == obj.keys() and torch.equal(back["w"], obj["w"])
    assert (back["epoch"], back["finished"], back["name"], back["none"]) == (3, False, "run", None)
    assert back["history"][0]["lr"] == 0.02 and back["history"][0]["val_total"] != back["history"][0]["val_total"]
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
