"""`verify`: re-read every shard of a build (and of its balanced sets) and check it
against dataset.json and manifest.csv, then audit for leakage.

Each problem is one line naming the file, sample or row; an empty list means
everything holds.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from hamdata.errors import HamdataError
from hamdata.store.card import balanced_folders, is_balanced_name
from hamdata.store.card import Build, Shard
from hamdata.store.manifest import CARD_NAME, INFO_NAME, MANIFEST_NAME, read_manifest, timm_info
from hamdata.store.schema import JSON_SCHEMAS
from hamdata.store.shards import IMAGE_EXTS, TAR_ERRORS, Sample, iter_samples, sha256_file, tar_error_detail
from hamdata.split.stratified import audit_leakage
from hamdata.workspace import writer_of

AUG_KEY = re.compile(r"^(?P<parent>[^.]+)_aug\d{4,}$")
ALLOWED_EXTRA = ("stats", "report.html")
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(tmp|old)-\d+$")  # Workspace's .NAME.tmp-PID and .NAME.old-PID
LOCK = re.compile(r"^\..+\.lock$")  # hamdata.locks' .NAME.lock: an empty file a killed command may leave; harmless


def verify_tree(folder: Path, progress: bool = True) -> list[str]:
    """Problems of the build at ``folder`` and of every balanced set (``balanced-N``) inside it."""
    folder = Path(folder)
    busy = being_written(folder)
    if busy:
        return [busy]
    try:
        build = Build.open(folder, strict=False).made_from_path
    except HamdataError:
        build = None
    if build:  # a balanced set given on its own: check it against the build it came from
        return verify_folder(folder, parent=(folder / build).resolve(), progress=progress)
    problems = verify_folder(folder, progress=progress)
    for sub in balanced_folders(folder):
        problems += [being_written(sub)] if writer_of(sub) else verify_folder(sub, parent=folder, progress=progress)
    return problems


def being_written(folder: Path) -> str | None:
    """The problem line of a folder that a command is writing now (a half-written state is never "intact")."""
    pid = writer_of(folder)
    return f"{folder}: being written by pid {pid}; verify it once that command has finished" if pid else None


def verify_folder(folder: Path, parent: Path | None = None, progress: bool = True) -> list[str]:
    """Problems of one build or balanced set (``parent`` is the build a balanced set came from)."""
    try:
        card = Build.open(folder, strict=False)  # what the card says, damaged fields included, each reported
        manifest = read_manifest(folder)
    except HamdataError as exc:
        return [str(exc)]
    problems = []
    if manifest["key"].duplicated().any():
        dup = manifest.loc[manifest["key"].duplicated(), "key"]
        problems.append(f"{folder / MANIFEST_NAME}: duplicate keys ({', '.join(dup[:3])})")
    rows = manifest.drop_duplicates("key").set_index("key")
    seen: list[dict] = []
    shards = card.shards
    bar = tqdm(total=sum(s.samples for s in shards if isinstance(s.samples, int)), unit="sample", desc=f"verify {folder.name}",
               disable=not progress, dynamic_ncols=True)
    classes = card.classes
    for entry in shards:
        problems += _check_shard(folder, entry, rows, seen, bar, classes)
    bar.close()
    missing = set(rows.index) - {s["key"] for s in seen}
    if missing:
        problems.append(f"{folder / MANIFEST_NAME}: {len(missing)} rows have no sample in any shard (first: {', '.join(sorted(missing)[:3])})")
    problems += _check_counts(folder, card, manifest)
    if card.train_stats is None and len(manifest[manifest["split"] == "train"]):
        problems.append(f"{folder / CARD_NAME}: train_stats missing or damaged (expected a mean and a std of three "
                        f"numbers each, the normalisation the trainers use)")
    problems += _check_classes(folder, card, parent)
    problems += _check_info(folder, card, parent)
    problems += _check_extra_files(folder, card)
    records = pd.DataFrame(seen, columns=["key", "image_id", "lesion_id", "split", "parent", "group"])
    problems += [f"{folder}: {p}" for p in audit_leakage(records)] if len(records) else []
    problems += _check_duplicates(folder, card, records)
    if parent is not None:
        problems += _check_parents(folder, parent, records)
    return problems


def _check_duplicates(folder: Path, card: Build, records: pd.DataFrame) -> list[str]:
    """The duplicate pairs of dataset.json: a dropped copy is not in the build, kept pairs share a split."""
    split_of = dict(zip(records["image_id"], records["split"])) if len(records) else {}
    problems = []
    for pair in card.duplicates:
        kept, other = pair.get("kept"), pair.get("dropped")
        if kept == other:
            continue  # the same image id in two inputs: one sample by construction
        if pair.get("action") == "dropped" and other in split_of:
            problems.append(f"{folder / CARD_NAME}: duplicate {other} of {kept} is listed as dropped but is in "
                            f"the {split_of[other]} split")
        elif kept in split_of and other in split_of and split_of[kept] != split_of[other]:
            problems.append(f"leakage: duplicate pair {kept} ({split_of[kept]}) and {other} ({split_of[other]}) "
                            f"is in two splits")
    for listed in card.duplicate_lists:
        problems += _check_listed(Path(listed.get("file", "")), split_of)
    return problems


def _check_listed(path: Path, split_of: dict) -> list[str]:
    """A published duplicate list the build honoured (ISIC 2020's), read again where it still is: no listed pair
    in two splits."""
    from hamdata.inputs.metadata_isic2020 import DUPLICATE_COLUMNS

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return []  # the input has moved: dataset.json's own duplicate records were checked above
    if not set(DUPLICATE_COLUMNS) <= set(table.columns):
        return [f"{path}: expected the columns {', '.join(DUPLICATE_COLUMNS)} of a duplicate list"]
    from hamdata.split.groups import UnionFind

    sets = UnionFind()  # a chain a-b, b-c is one picture, whether b is in the build or not
    for a, b in zip(table[DUPLICATE_COLUMNS[0]], table[DUPLICATE_COLUMNS[1]]):
        sets.union(a, b)
    seen: dict = {}
    problems = []
    for image in sorted(i for i in sets.parent if i in split_of):
        root = sets.find(image)
        first = seen.setdefault(root, image)
        if split_of[first] != split_of[image]:
            problems.append(f"leakage: {first} ({split_of[first]}) and {image} ({split_of[image]}), copies of one "
                            f"picture by {path.name}, are in two splits")
    return problems


def _check_shard(folder: Path, entry: Shard, rows: pd.DataFrame, seen: list, bar, classes: tuple[str, ...]) -> list[str]:
    path = folder / entry.path
    if not path.is_file():
        return [f"{path}: shard listed in {CARD_NAME} is missing"]
    problems = []
    size = path.stat().st_size
    if size != entry.bytes:
        problems.append(f"{path}: {size} bytes, {CARD_NAME} says {entry.bytes}")
    if sha256_file(path) != entry.sha256:
        problems.append(f"{path}: sha256 differs from {CARD_NAME} (the file was changed or damaged)")
    count = 0
    try:
        for sample in iter_samples(path):
            count += 1
            bar.update(1)
            problems += _check_sample(path, entry, sample, rows, seen, classes)
    except TAR_ERRORS as exc:
        problems.append(f"{path}: unreadable tar after {count} samples ({tar_error_detail(exc)})")
    if count != entry.samples:
        problems.append(f"{path}: {count} samples, {CARD_NAME} says {entry.samples}")
    return problems


def _check_sample(path: Path, entry: Shard, sample: Sample, rows: pd.DataFrame, seen: list,
                  classes: tuple[str, ...]) -> list[str]:
    where = f"{path}: sample {sample.key}"
    exts = [ext for ext, _ in sample.members]
    if len(exts) != 3 or exts[0] not in IMAGE_EXTS or exts[1:] != ["cls", "json"]:
        return [f"{where}: members {exts}, expected [jpg|png, cls, json] in that order"]
    image, cls, meta = (data for _, data in sample.members)
    try:
        label = int(cls.decode("ascii"))
        record = json.loads(meta.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return [f"{where}: unreadable cls or json ({exc})"]
    if not isinstance(record, dict) or tuple(record) not in JSON_SCHEMAS:
        return [f"{where}: json fields {list(record) if isinstance(record, dict) else record!r}, expected {list(JSON_SCHEMAS[-1])}"]
    problems = []
    if not 0 <= label < len(classes) or classes[label] != record["dx"]:  # an index into the build's class list
        problems.append(f"{where}: label {label} disagrees with json dx {record['dx']!r}")
    if record["split"] != entry.split:
        problems.append(f"{where}: json split {record['split']!r} in a {entry.split} shard")
    problems += _check_provenance(where, sample.key, record)
    seen.append({"key": sample.key, "image_id": record["image_id"], "lesion_id": record["lesion_id"],
                 "split": record["split"], "parent": record["parent"], "group": record.get("group") or record["lesion_id"]})
    if sample.key not in rows.index:
        return problems + [f"{where}: not in {MANIFEST_NAME}"]
    row = rows.loc[sample.key]
    expected = {"split": record["split"], "label": str(label), "dx": record["dx"], "image_id": record["image_id"],
                "lesion_id": record["lesion_id"], "source": record["source"], "parent": record["parent"] or "",
                "shard": entry.path, "sha256": hashlib.sha256(image).hexdigest()}
    for column, value in expected.items():
        if row[column] != value:
            problems.append(f"{where}: {MANIFEST_NAME} {column} is {row[column]!r}, the shard says {value!r}")
    return problems


def _check_provenance(where: str, key: str, record: dict) -> list[str]:
    if record["source"] == "original":
        if key != record["image_id"] or record["parent"] is not None or record["recipe"] is not None:
            return [f"{where}: an original must have key == image_id and no parent or recipe"]
        return []
    if record["source"] == "augmented":
        match = AUG_KEY.match(key)
        if not match or record["parent"] != match["parent"] or not isinstance(record["recipe"], dict):
            return [f"{where}: an augmented copy needs key <parent>_augNNNN, its parent and a recipe"]
        return []
    return [f"{where}: source {record['source']!r}, expected original or augmented"]


def _check_counts(folder: Path, card: Build, manifest: pd.DataFrame) -> list[str]:
    problems = []
    classes = card.classes
    for split, per_class in card.written_counts.items():
        part = manifest[manifest["split"] == split]["dx"].value_counts()
        strange = [dx for dx in per_class if dx not in classes]
        if strange:
            problems.append(f"{folder / CARD_NAME}: {split} counts name {', '.join(strange)}, not in its classes ({', '.join(classes)})")
        for dx in classes:
            if int(part.get(dx, 0)) != per_class.get(dx, 0):
                problems.append(f"{folder / MANIFEST_NAME}: {split}/{dx} has {int(part.get(dx, 0))} rows, {CARD_NAME} says {per_class.get(dx, 0)}")
    return problems


def _check_classes(folder: Path, card: Build, parent: Path | None) -> list[str]:
    """A balanced set has the class list of its build (its labels are indices into that list)."""
    if parent is None:
        return []
    try:
        build = Build.open(parent).classes
    except HamdataError:  # _check_parents says so
        return []
    own = card.classes
    if own != build:
        return [f"{folder / CARD_NAME}: classes {', '.join(own)}, but its build {parent} has {', '.join(build)}"]
    return []


def _check_info(folder: Path, card: Build, parent: Path | None) -> list[str]:
    """_info.json (timm's split index), when there is one, against the splits and shards of dataset.json (and, for
    a balanced set, the val and test splits of its build, ``parent``).

    A build made before _info.json existed has none, and that is no problem.
    """
    path = folder / INFO_NAME
    if not path.is_file():
        return []
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{path}: unreadable ({exc})"]
    splits = info.get("splits") if isinstance(info, dict) else None
    if not isinstance(splits, dict):
        return [f"{path}: expected an object with \"splits\" (timm's WebDataset info format)"]
    build = None
    if parent is not None:
        try:
            build = Build.open(parent).raw
        except HamdataError:  # _check_parents says so; the set's own splits are still checked
            pass
    expected = timm_info(card.raw, build)["splits"]
    problems = []
    if (parent is None or build is not None) and sorted(splits) != sorted(expected):
        problems.append(f"{path}: splits {sorted(splits)}, expected {sorted(expected)} (from {CARD_NAME})")
    for split in sorted(splits.keys() & expected.keys()):
        entry = splits[split] if isinstance(splits[split], dict) else {}
        for field, want in expected[split].items():
            if entry.get(field) != want:
                problems.append(f"{path}: {split} {field} is {_brief(entry.get(field))}, {CARD_NAME} gives {_brief(want)}")
    return problems


def _brief(value) -> str:
    """A value for a problem line: a long list shortened to its start and length."""
    if isinstance(value, list) and len(value) > 4:
        return f"[{', '.join(map(repr, value[:3]))}, ... ({len(value)} items)]"
    return repr(value)


def _check_extra_files(folder: Path, card: Build) -> list[str]:
    listed = {s.path for s in card.shards} | {CARD_NAME, MANIFEST_NAME, INFO_NAME}
    problems = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        top = rel.split("/", 1)[0]
        leftover = LEFTOVER.match(top)
        if leftover:  # a killed balance's hidden folder (or a running one's): one line for it, not one per file
            if rel == top:
                busy = being_written(folder / leftover["name"])
                problems.append(busy or f"{path}: left over from an interrupted run; delete it")
            continue
        if LOCK.match(rel):
            continue
        if path.is_dir() or rel in listed or is_balanced_name(top) or top in ALLOWED_EXTRA:
            continue
        problems.append(f"{path}: not listed in {CARD_NAME}")
    return problems


def _check_parents(folder: Path, build: Path, records: pd.DataFrame) -> list[str]:
    """A balanced set may only hold train samples of its build, and copies of train parents."""
    try:
        base = read_manifest(build).set_index("key")
    except HamdataError as exc:
        return [str(exc)]
    problems = []
    train_lesions = set(base.loc[base["split"] == "train", "lesion_id"])
    for rec in records.itertuples(index=False):
        origin = rec.parent if isinstance(rec.parent, str) and rec.parent else rec.key  # None became NaN in the frame
        if origin not in base.index or base.at[origin, "split"] != "train":
            problems.append(f"{folder}: sample {rec.key} comes from {origin}, which is not a train sample of {build}")
        elif rec.lesion_id not in train_lesions:
            problems.append(f"{folder}: sample {rec.key} has lesion {rec.lesion_id}, not a train lesion of {build}")
    return problems[:50]
