"""disk/copy.py on real sparse files: holes kept, a temporary name until complete, nothing
left by a copy that stops half-way. The test directory is ext4 here (no reflinks), so the
extent copy is what runs; a reflink is shown where the file system has one."""

from __future__ import annotations

import hashlib
import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from hostcreator.disk import copy
from hostcreator.errors import HostCreatorError

pytestmark = pytest.mark.unit

MIB = 1 << 20


def sparse_file(path: Path) -> Path:
    """64 MiB apparent, three data extents (one at the very end), holes between."""
    with open(path, "wb") as f:
        f.truncate(64 * MIB)
        for offset, fill in ((0, b"a"), (20 * MIB, b"b"), (64 * MIB - 4096, b"z")):
            f.seek(offset)
            f.write(fill * (4096 if offset else MIB))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_extent_copy_keeps_the_holes_and_the_content(tmp_path):
    source = sparse_file(tmp_path / "src.img")
    before = digest(source)
    target = tmp_path / "dst.img"
    with ExitStack() as stack:
        copied = copy.copy(stack, source, target)
        assert copied.temporary.name.startswith(".dst.img.clone-")
        assert not target.exists()  # only the temporary name until publish
        copy.publish(copied, target)
    assert not copied.temporary.exists()
    assert digest(target) == digest(source) == before
    assert target.stat().st_size == 64 * MIB
    if copied.method is copy.Method.EXTENTS:
        # The copy allocates what the source has, not its 64 MiB.
        assert copy.allocated_bytes(target) <= copy.allocated_bytes(source)
        with open(source, "rb") as s, open(target, "rb") as t:
            assert copy.extents(t.fileno(), 64 * MIB) == copy.extents(s.fileno(), 64 * MIB)


def test_extents_of_a_file_that_is_all_hole(tmp_path):
    path = tmp_path / "hole.img"
    with open(path, "wb") as f:
        f.truncate(8 * MIB)
    with open(path, "rb") as f:
        assert copy.extents(f.fileno(), 8 * MIB) == []
    target = tmp_path / "t.img"
    with ExitStack() as stack:
        copy.publish(copy.copy(stack, path, target), target)
    assert target.stat().st_size == 8 * MIB and copy.allocated_bytes(target) == 0


def test_a_copy_that_stops_leaves_nothing(tmp_path, monkeypatch):
    source = sparse_file(tmp_path / "src.img")
    calls = []

    def stop_after_first(src, dst, offset, length):
        # Fault injection: the second extent never arrives (as when Ctrl-C comes).
        if calls:
            raise KeyboardInterrupt
        calls.append(offset)
        os.copy_file_range(src, dst, length, offset, offset)

    monkeypatch.setattr(copy, "_copy_range", stop_after_first)
    monkeypatch.setattr(copy, "_reflink", lambda s, t: False)
    with pytest.raises(KeyboardInterrupt), ExitStack() as stack:
        copy.copy(stack, source, tmp_path / "dst.img")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.img"]


def test_a_failure_after_the_copy_removes_the_temporary_file(tmp_path):
    source = sparse_file(tmp_path / "src.img")
    with pytest.raises(RuntimeError), ExitStack() as stack:
        copied = copy.copy(stack, source, tmp_path / "dst.img")
        assert copied.temporary.exists()
        raise RuntimeError("identity failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.img"]


def test_publish_never_replaces_an_existing_disk(tmp_path):
    source = sparse_file(tmp_path / "src.img")
    target = tmp_path / "dst.img"
    target.write_bytes(b"someone else's disk")
    with pytest.raises(HostCreatorError, match="appeared while the copy was made"), \
            ExitStack() as stack:
        copy.publish(copy.copy(stack, source, target), target)
    assert target.read_bytes() == b"someone else's disk"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst.img", "src.img"]


def test_the_source_is_opened_read_only(tmp_path):
    source = sparse_file(tmp_path / "src.img")
    source.chmod(0o444)
    before = source.stat()
    with ExitStack() as stack:
        copy.publish(copy.copy(stack, source, tmp_path / "dst.img"), tmp_path / "dst.img")
    after = source.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def test_block_copy_leaves_zero_pieces_as_holes_only_when_asked(tmp_path):
    source = sparse_file(tmp_path / "src.img")
    for holes in (True, False):
        target = tmp_path / f"dst-{holes}.img"
        fd_in = os.open(source, os.O_RDONLY)
        fd_out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            copy.copy_blocks(fd_in, fd_out, 64 * MIB, holes=holes)
            os.ftruncate(fd_out, 64 * MIB)
        finally:
            os.close(fd_in)
            os.close(fd_out)
        assert digest(target) == digest(source)
        # Three data extents, each in one BLOCK piece: 12 MiB at most; without holes, all.
        used = copy.allocated_bytes(target)
        assert used <= 3 * copy.BLOCK if holes else used >= 64 * MIB, used
