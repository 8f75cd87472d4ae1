"""Image containers: folders, zips and HDF5 files of images, listed by image id and read by locator.

``find_images([folder, zip, hdf5, ...])`` lists the images of each container as {image_id: locator}; an id in
several containers is taken from the first. A locator is

- a file path;
- ``zip:<zip path>!<member>`` (Harvard Dataverse's HAM10000_images_part_1.zip);
- ``h5:<hdf5 path>!<dataset>`` (ISIC 2024's train-image.hdf5: one scalar dataset of JPEG bytes per isic_id).

``read_image_bytes(locator)`` reads one, safely from worker processes: each process opens a zip or HDF5 file
once, itself (a handle inherited through fork would share its file offset). An HDF5 file is reopened every
``H5_REOPEN`` reads: HDF5 keeps what it learnt of every dataset opened (240 MiB after 120,000 of ISIC 2024's
crops), and a fresh handle with the freed pages returned (hamdata.memory) holds a worker at about 70 MiB.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import zipfile
import zlib
from pathlib import Path

from hamdata import memory
from hamdata.errors import HamdataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
H5_REOPEN = 10_000  # reads of one HDF5 file after which a process opens it afresh
_H5_LOCATOR = re.compile(r"h5:(?P<file>.+?\.(?:hdf5|h5))!(?P<key>[^!]+)", re.IGNORECASE | re.DOTALL)
_ID_OK = re.compile(r"[A-Za-z0-9_-]+")
_ZIP_LOCATOR = re.compile(r"zip:(?P<zip>.+?\.zip)!(?P<member>.+)", re.IGNORECASE | re.DOTALL)


def _image_id(name: str, extensions=IMAGE_EXTENSIONS) -> str | None:
    """The image_id a file name stands for, or None for other files (and "._x.jpg" forks)."""
    stem, ext = os.path.splitext(name)
    if name.startswith(".") or not stem or ext.lower() not in extensions:
        return None
    return stem


def _add(found: dict[str, str], image_id: str, locator: str, container: Path) -> None:
    if image_id in found:
        raise HamdataError(
            f"{container}: two files for image {image_id}: {found[image_id]} and {locator}: "
            f"expected one image per image_id"
        )
    found[image_id] = locator


def _scan_folder(folder: Path, extensions=IMAGE_EXTENSIONS) -> dict[str, str]:
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    except OSError as e:
        raise HamdataError(f"cannot list {folder}: {e.strerror or e}") from None
    found: dict[str, str] = {}
    for name in names:
        if (image_id := _image_id(name, extensions)) is not None:
            _add(found, image_id, str(folder / name), folder)
    return found


def _scan_zip(path: Path) -> dict[str, str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(i.filename for i in zf.infolist() if not i.is_dir())
    except (OSError, zipfile.BadZipFile) as e:
        raise HamdataError(f"{path} is not a readable zip file: {e}") from None
    found: dict[str, str] = {}
    for name in names:
        if (image_id := _image_id(posixpath.basename(name))) is not None:
            _add(found, image_id, f"zip:{path}!{name}", path)
    return found


def _scan_hdf5(path: Path) -> dict[str, str]:
    """The images of an HDF5 file of one scalar dataset of encoded image bytes per image id, at its root
    (ISIC 2024's train-image.hdf5: ``f[isic_id][()]`` is the JPEG)."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            names = sorted(name for name, item in f.items() if isinstance(item, h5py.Dataset))
    except OSError as e:
        raise HamdataError(f"{path} is not a readable HDF5 file ({e}): expected ISIC 2024's train-image.hdf5, one "
                           f"dataset of JPEG bytes per isic_id") from None
    return {name: f"h5:{path}!{name}" for name in names if _ID_OK.fullmatch(name)}


def _h5py():
    try:
        import h5py
    except ImportError:
        raise HamdataError("reading an HDF5 image file needs h5py: pip install h5py") from None
    return h5py


def find_images(containers: list[Path], extensions=IMAGE_EXTENSIONS) -> dict[str, str]:
    """Images of all containers; an id in several containers is taken from the first."""
    found: dict[str, str] = {}
    for container in containers:
        suffix = container.suffix.lower()
        if suffix == ".zip":
            scanned = _scan_zip(container)
        elif suffix in (".hdf5", ".h5"):
            scanned = _scan_hdf5(container)
        else:
            scanned = _scan_folder(container, extensions)
        for image_id, locator in scanned.items():
            found.setdefault(image_id, locator)
    return found


@functools.lru_cache(maxsize=8)
def _open_zip(path: str, pid: int) -> zipfile.ZipFile:
    # pid is part of the key: a ZipFile inherited through fork shares its file
    # offset with the parent, so each worker process opens its own.
    return zipfile.ZipFile(path)


_H5_OPEN: dict[tuple[str, int], list] = {}  # (path, pid) -> [h5py.File, reads]; pid: a forked child's own


def _open_hdf5(path: str):
    """This process's handle on an HDF5 file, opened afresh every H5_REOPEN reads (see the module docstring)."""
    key = (path, os.getpid())
    entry = _H5_OPEN.get(key)
    if entry is not None and entry[1] >= H5_REOPEN:
        del _H5_OPEN[key]
        entry[0].close()
        memory.release()
        entry = None
    if entry is None:
        entry = _H5_OPEN[key] = [_h5py().File(path, "r"), 0]
    entry[1] += 1
    return entry[0]


def _read_hdf5(path: str, key: str) -> bytes:
    try:
        return bytes(_open_hdf5(path)[key][()])
    except FileNotFoundError:
        raise HamdataError(f"HDF5 file {path} not found") from None
    except KeyError:
        raise HamdataError(f"{path} has no image {key!r}") from None
    except (OSError, TypeError, ValueError) as e:
        raise HamdataError(f"cannot read image {key!r} from {path}: {e}") from None


def read_image_bytes(locator: str) -> bytes:
    """Bytes of an image: a file path, "zip:<zip path>!<member>" or "h5:<hdf5 path>!<dataset>"."""
    if locator.startswith("h5:") and (h5 := _H5_LOCATOR.fullmatch(locator)):
        return _read_hdf5(h5["file"], h5["key"])
    match = _ZIP_LOCATOR.fullmatch(locator)
    if match is None:
        try:
            return Path(locator).read_bytes()
        except FileNotFoundError:
            raise HamdataError(f"image file {locator} not found") from None
        except OSError as e:
            raise HamdataError(f"cannot read image file {locator}: {e.strerror or e}") from None
    zip_path, member = match["zip"], match["member"]
    try:
        return _open_zip(zip_path, os.getpid()).read(member)
    except FileNotFoundError:
        raise HamdataError(f"zip file {zip_path} not found") from None
    except KeyError:
        raise HamdataError(f"{zip_path} has no member {member!r}") from None
    except (OSError, zipfile.BadZipFile, zlib.error) as e:
        raise HamdataError(f"cannot read {member!r} from {zip_path}: {e}") from None
