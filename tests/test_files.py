"""Files written whole: a reader or a crash sees the old file or the new one, never half of one."""

import os
import stat

import pytest

from rnn_mnist import files


def test_a_file_is_written_whole_with_the_usual_mode(tmp_path):
    files.atomic_write(tmp_path / "a.txt", b"hello")
    assert (tmp_path / "a.txt").read_bytes() == b"hello" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~files.UMASK


def test_writing_leaves_the_process_umask_alone(tmp_path, monkeypatch):
    # setting the umask to read it is process-wide: another thread could create a file in between
    def no_umask(mask):
        raise AssertionError("atomic_write changed the process umask")

    monkeypatch.setattr(os, "umask", no_umask)
    files.atomic_write(tmp_path / "a.txt", b"x")


def test_the_data_and_the_rename_reach_the_disk(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    files.atomic_write(tmp_path / "a.txt", b"x")
    assert len(synced) == 2 and synced[1] == str(tmp_path)  # the file (under its temporary name), then its folder


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    files.atomic_write(tmp_path / "a.txt", b"old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        files.atomic_write(tmp_path / "a.txt", b"new")
    assert (tmp_path / "a.txt").read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
