"""Deterministic WebDataset shard writing and plain reading.

A sample is a key plus its members in a fixed order: the image (``jpg`` or
``png``), ``cls`` and ``json`` (its fields: hamdata.store.schema). Tar headers carry a fixed mtime, uid/gid 0,
fixed user/group names and mode, so the same samples always give the same
bytes. Reading needs only :mod:`tarfile`; any WebDataset reader works too.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MTIME = 946684800  # 2000-01-01T00:00:00Z: fixed, so that tars are reproducible
OWNER = "hamdata"
IMAGE_EXTS = ("jpg", "png")
MEMBER_ORDER = ("image", "cls", "json")
def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = MTIME
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = OWNER
    return info


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ShardInfo:
    """One written shard, as dataset.json lists it (path relative to the build)."""

    path: str
    split: str
    samples: int
    bytes: int = 0
    sha256: str = ""

    def to_dict(self) -> dict:
        return {"path": self.path, "split": self.split, "samples": self.samples, "bytes": self.bytes, "sha256": self.sha256}


@dataclass
class ShardWriter:
    """Writes samples of one split into ``<root>/<prefix>-NNNNNN.tar``, ``per_shard`` at a time.

    ``root`` is the build folder, ``subdir`` the split's folder inside it (``train``;
    empty for a balanced set, whose tars lie at its top), ``prefix`` the shard name prefix.
    """

    root: Path
    subdir: str
    prefix: str
    split: str
    per_shard: int
    shards: list[ShardInfo] = field(default_factory=list)
    _tar: tarfile.TarFile | None = None
    _file: io.BufferedWriter | None = None

    def write(self, key: str, image_ext: str, image: bytes, label: int, meta: bytes) -> str:
        """Append one sample; returns the shard path (relative to root) it went into."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain dots or slashes")
        if self._tar is None or self.shards[-1].samples >= self.per_shard:
            self._open_next()
        for ext, data in ((image_ext, image), ("cls", str(label).encode("ascii")), ("json", meta)):
            self._tar.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))
        self.shards[-1].samples += 1
        return self.shards[-1].path

    def _open_next(self) -> None:
        self._close_current()
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        rel = f"{self.subdir}/{name}" if self.subdir else name
        (self.root / self.subdir).mkdir(parents=True, exist_ok=True)
        self._file = open(self.root / rel, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self.shards.append(ShardInfo(path=rel, split=self.split, samples=0))

    def _close_current(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._file.flush()
        self._file.close()
        info = self.shards[-1]
        path = self.root / info.path
        info.bytes = path.stat().st_size
        info.sha256 = sha256_file(path)
        self._tar = self._file = None

    def close(self) -> list[ShardInfo]:
        self._close_current()
        return self.shards

    def abort(self) -> None:
        """Close without caring about the result (the build folder is thrown away)."""
        if self._tar is not None:
            with contextlib.suppress(OSError):  # a full disk fails here too; the first error is the one to report
                self._tar.close()
            with contextlib.suppress(OSError):
                self._file.close()
            self._tar = self._file = None


@dataclass
class Sample:
    """A sample read back from a shard: key and members in file order."""

    key: str
    members: list[tuple[str, bytes]]

    def get(self, ext: str) -> bytes | None:
        for name, data in self.members:
            if name == ext:
                return data
        return None

    @property
    def image_ext(self) -> str | None:
        return next((ext for ext, _ in self.members if ext in IMAGE_EXTS), None)


def split_member_name(name: str) -> tuple[str, str]:
    """``"ISIC_1.jpg"`` -> ``("ISIC_1", "jpg")``; the key is everything before the first dot."""
    base = name.rsplit("/", 1)[-1]
    key, _, ext = base.partition(".")
    return key, ext


# What reading a missing, damaged or truncated tar raises (tarfile, the file system, a short read).
TAR_ERRORS = (tarfile.TarError, OSError, EOFError)


def tar_error_detail(exc: BaseException) -> str:
    """``"ReadError: truncated at byte 123, inside X.jpg"``: one of TAR_ERRORS, for a one-line message."""
    return f"{exc.__class__.__name__}: {exc}"


@dataclass(frozen=True)
class Member:
    """One file of a tar: key and extension, where its data lies in the tar, and the data when it was read."""

    key: str
    ext: str
    offset: int
    size: int
    data: bytes | None = None


def iter_members(path: Path, read: Callable[[str, str], bool] | None = None) -> Iterator[Member]:
    """The regular files of one tar in file order, the whole tar checked to its end.

    read: ``read(key, ext)`` says whether to read a member's data (default: all); the others
    are seeked past and come with ``data=None``. Raises one of TAR_ERRORS on a damaged tar,
    also where plain tarfile would stop early without a word (see check_tar_end).
    """
    end, last = yield from _walk(path, read)
    check_tar_end(path, end, last)


def iter_samples(path: Path) -> Iterator[Sample]:
    """Samples of one tar in file order, grouping consecutive members that share a key.

    Raises one of TAR_ERRORS on a damaged tar (after the last whole sample when only the
    end is damaged); callers decide how to report it.
    """
    end, last = yield from _group(_walk(path, None))
    check_tar_end(path, end, last)


def _walk(path: Path, read) -> Generator[Member, None, tuple[int, str]]:
    """iter_members without the end check; returns where the members end and the last one's name."""
    last = "the start"
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = split_member_name(member.name)
            data = tar.extractfile(member).read() if read is None or read(key, ext) else None
            last = member.name
            yield Member(key, ext, member.offset_data, member.size, data)
        return tar.offset, last


def _group(members: Generator[Member, None, tuple[int, str]]) -> Generator[Sample, None, tuple[int, str]]:
    """Consecutive members sharing a key as samples; returns what ``members`` returns."""
    current: Sample | None = None
    while True:
        try:
            member = next(members)
        except StopIteration as stop:
            result = stop.value
            break
        if current is None or current.key != member.key:
            if current is not None:
                yield current
            current = Sample(key=member.key, members=[])
        current.members.append((member.ext, member.data))
    if current is not None:
        yield current
    return result


def check_tar_end(path: Path, end: int, last: str) -> None:
    """Only zero blocks may follow the last member.

    tarfile takes a damaged header after the first one for the end of the archive,
    which would silently drop every sample behind it.
    """
    size = os.path.getsize(path)
    if end > size:  # tarfile also reads a member cut short without complaint
        raise tarfile.ReadError(f"truncated at byte {size}, inside {last}")
    with open(path, "rb") as handle:
        handle.seek(end)
        while block := handle.read(1 << 16):
            if block.count(0) != len(block):
                if size - end < tarfile.BLOCKSIZE:
                    raise tarfile.ReadError(f"truncated at byte {size}, inside the member header after {last}")
                raise tarfile.ReadError(f"damaged member header at byte {end}, after {last}")
