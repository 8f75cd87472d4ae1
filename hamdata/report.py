"""`report`: one self-contained HTML page for a build, a balanced set or a training run.

Whatever FOLDER holds (a dataset.json of kind "build" or "balanced", or a run's
metrics.jsonl / metrics.json), the page shows what a person looks at before
trusting it: the dataset card, class distributions, sample images (raw beside
preprocessed for a build, parents beside augmented copies for a balanced set),
for a build of several inputs its collections and duplicate pairs side by side
(hamdata.pages.collections), or a run's metrics, curves, confusion matrix and
Grad-CAM overlays (hamdata.pages.run).

Everything is embedded (hamdata.pages.html): images as base64 ``data:`` URIs,
thumbnails as JPEG to keep the file small, plots drawn on matplotlib's Agg
canvas, CSS inline. No script, no external font or URL: the file opens offline
and can be mailed. Samples are drawn with a seeded generator, so the same
folder gives the same page.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hamdata.pages import html as h
from hamdata.inputs.classes import CLASS_NAMES, CLASSES
from hamdata.pages.collections import InputFiles, collections_section, duplicates_section, input_files, pair_keys
from hamdata.errors import HamdataError, os_error_message
from hamdata.pages.html import MAX_ROWS
from hamdata.locks import hold
from hamdata.store.card import Build, Shard, thaw
from hamdata.store.manifest import CARD_NAME, read_manifest
from hamdata.plots import new_figure
from hamdata.image.preprocess import PreprocessConfig, decode_image, encode_image, preprocess
from hamdata.runfiles import RUN_MARKERS
from hamdata.pages.run import is_run, run_sections
from hamdata.store.shards import IMAGE_EXTS, TAR_ERRORS, iter_members
from hamdata.workspace import atomic_write

REPORT_NAME = "report.html"
PER_CLASS = 4  # samples shown per class


def write_report(folder, out=None, *, per_class: int = PER_CLASS, seed: int = 0) -> Path:
    """Write the report of ``folder`` to ``out`` (default FOLDER/report.html); returns its path.

    folder: a build, a balanced set or a training run. out: an HTML file or a folder to put report.html in.
    per_class: samples shown per class. seed: which samples (the same seed gives the same page).
    """
    folder = Path(folder)
    text = render_report(folder, per_class=per_class, seed=seed)
    target = Path(out) if out is not None else folder / REPORT_NAME
    if target.is_dir():
        target = target / REPORT_NAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with hold(target):  # one writer per page
            atomic_write(target, text)  # a reader never sees half a page
    except OSError as exc:
        raise HamdataError(os_error_message(exc, target)) from None
    return target


def detect_kind(folder: Path) -> str:
    """"build", "balanced" or "run"; a one-line error for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HamdataError(f"{folder}: no such folder; expected a build, a balanced set or a training run")
    if (folder / CARD_NAME).is_file():
        kind = Build.open(folder).kind
        if kind not in ("build", "balanced"):
            raise HamdataError(f"{folder / CARD_NAME}: kind {kind!r}, expected build or balanced")
        return kind
    if is_run(folder):
        return "run"
    raise HamdataError(f"{folder}: neither a build or balanced set (no {CARD_NAME}) "
                       f"nor a training run (no {' or '.join(RUN_MARKERS)})")


def render_report(folder: Path, per_class: int = PER_CLASS, seed: int = 0) -> str:
    """The report page of ``folder`` as one HTML string."""
    folder = Path(folder)
    kind = detect_kind(folder)
    if kind == "run":
        sections = run_sections(folder, REPORT_NAME)
    else:
        sections = (_build_page if kind == "build" else _balanced_page)(folder, per_class, seed)
    return h.page(f"hamdata report: {kind} {folder.resolve().name}", str(folder.resolve()), sections)


# ------------------------------------------------------------------ reading shards


@dataclass
class Scan:
    """What one pass over a set's tars found: every json member, the wanted images, problems."""

    meta: dict = field(default_factory=dict)  # key -> json record
    images: dict = field(default_factory=dict)  # key -> (ext, bytes), wanted keys only
    problems: list = field(default_factory=list)


def scan_shards(folder: Path, shards: tuple[Shard, ...], wanted: set[str], scan: Scan | None = None) -> Scan:
    """Read json members and the ``wanted`` images; seeks past every other image."""
    scan = scan or Scan()

    def needed(key: str, ext: str) -> bool:
        return ext == "json" or (ext in IMAGE_EXTS and key in wanted)

    for entry in shards:
        path = folder / entry.path
        try:
            for member in iter_members(path, read=needed):
                if member.ext == "json":
                    record = json.loads(member.data)
                    scan.meta[member.key] = record if isinstance(record, dict) else {}
                elif member.data is not None:
                    scan.images[member.key] = (member.ext, member.data)
        except (*TAR_ERRORS, ValueError) as exc:  # ValueError: a json member that is not JSON
            scan.problems.append(f"{path}: unreadable ({exc.__class__.__name__}); run `hamdata verify`")
    return scan


def choose_samples(manifest: pd.DataFrame, per_class: int, seed: int, classes=CLASSES) -> dict[str, list[str]]:
    """Up to ``per_class`` keys of each class of ``classes``, drawn with a seeded generator, sorted."""
    chosen = {}
    for index, dx in enumerate(classes):
        keys = sorted(manifest.loc[manifest["dx"] == dx, "key"])
        pick = np.random.default_rng([seed, index]).choice(len(keys), size=min(per_class, len(keys)), replace=False)
        chosen[dx] = sorted(keys[i] for i in pick)
    return chosen


def _records(manifest: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Per-sample metadata for ``stats.tables_from_records``: manifest columns plus the json's."""
    rows = []
    for row in manifest.itertuples(index=False):
        record = meta.get(row.key) or {}
        rows.append({"image_id": row.image_id, "lesion_id": row.lesion_id, "dx": row.dx, "split": row.split,
                     "source": row.source or "original", **{k: record.get(k) for k in ("dx_type", "age", "sex", "localization")}})
    return pd.DataFrame(rows, columns=["image_id", "lesion_id", "dx", "split", "source", "dx_type", "age", "sex", "localization"])


def _decode(data: bytes) -> np.ndarray | None:
    try:
        return decode_image(data)[0]
    except HamdataError:
        return None


# ------------------------------------------------------------------ builds and balanced sets


def plot_sources(table: pd.DataFrame) -> Figure:
    """Stacked bars: original and augmented samples per class (a ``stats.source_counts`` table, its rows the classes)."""
    classes = [dx for dx in table.index if dx != "total"]
    figure = new_figure(8, 5)
    ax = figure.add_subplot()
    bottom = np.zeros(len(classes))
    for column in table.columns:
        values = table.loc[classes, column].to_numpy()
        ax.bar(classes, values, bottom=bottom, label=column)
        bottom += values
    ax.set(title="Original and augmented samples per class", xlabel="class (dx)", ylabel="samples")
    ax.legend()
    return figure


def _card_section(folder: Path, build: Build, facts: list[tuple[str, object]], extra: list[str]) -> h.Section:
    section = h.Section("card", "Dataset card").add(h.facts(facts), *extra)
    rows = [[s.path, s.split, s.samples, s.bytes, s.sha256[:16]] for s in build.shards]
    section.add("<h3>Shards</h3>", h.table(["path", "split", "samples", "bytes", "sha256 (first 16)"], rows, MAX_ROWS))
    text = (folder / CARD_NAME).read_text(encoding="utf-8")
    return section.add(h.details(f"{CARD_NAME} as written ({len(text):,} characters)", text))


def _common_facts(build: Build) -> list[tuple[str, object]]:
    shards = build.shards
    per_split = ", ".join(f"{split} {build.samples(split)}" for split in build.written_counts)
    stats = build.train_stats
    libs = ", ".join(f"{k} {v}" for k, v in sorted(build.libraries.items()))
    return [("kind", build.kind), ("written by", build.tool), ("format version", build.format_version), ("libraries", libs),
            ("samples", f"{sum(s.samples for s in shards)} ({per_split})"),
            ("shards", f"{len(shards)} tars, {sum(s.bytes for s in shards) / 1e6:.1f} MB"),
            ("train mean / std (RGB, 0-1)", f"{list(stats.mean)} / {list(stats.std)}" if stats else None)]


def _distribution_section(records: pd.DataFrame, problems: list[str], classes: tuple[str, ...]) -> h.Section:
    from hamdata.stats import (plot_age_by_class, plot_class_distribution, plot_images_per_lesion, plot_localization,
                        plot_sex_by_class, tables_from_records)

    section = h.Section("distribution", "Class distribution").add(*[h.note(p) for p in problems])
    if records.empty:
        return section.add(h.note("no samples"))
    tables = tables_from_records(records, classes)
    ages = records.assign(age=pd.to_numeric(records["age"], errors="coerce"))
    section.add(h.frame(tables["class_counts"].round(1)))
    plots = [plot_class_distribution(tables["class_counts"])]
    if "source" in tables:
        section.add("<h3>Original and augmented samples</h3>", h.frame(tables["source"]))
        train = tables["source"].drop(index="total")
        plots.append(plot_sources(train.rename(columns=lambda c: c.split(" ", 1)[-1])))
    plots += [plot_images_per_lesion(tables["images_per_lesion"]), plot_age_by_class(ages, classes),
              plot_sex_by_class(tables["sex_by_class"]), plot_localization(tables["localization"])]
    section.add('<div class="plots">' + "".join(h.img(h.figure_uri(p), "plot") for p in plots) + "</div>")
    return section.add("<h3>Lesions per class</h3>", h.frame(tables["lesions_per_class"].round(2)))


def _raw_sources(files: InputFiles, image_ids: list[str]) -> tuple[dict[str, bytes], str]:
    """Raw bytes of the given images from the build's input folders (the first that has an id, as the build
    took it), and a note when some are gone."""
    from hamdata.inputs.containers import read_image_bytes

    roots = [(index, entry["root"]) for index, entry in files.inputs.items() if entry.get("root")]
    if not roots:
        return {}, f"{CARD_NAME} names no input folder: only the preprocessed images are shown"
    sources, notes = [], []
    for index, root in roots:
        if not Path(root).is_dir():
            notes.append(f"the raw data is no longer at {root}")
            continue
        source, error = files.source(index)
        if source is None:
            notes.append(f"the raw data at {root} cannot be read ({error})")
        else:
            sources.append(source)
    if not sources:
        return {}, "; ".join(notes) + ": only the preprocessed images are shown"
    found = {}
    for image_id in image_ids:
        for source in sources:
            try:
                found[image_id] = read_image_bytes(source.images[image_id])
                break
            except (KeyError, HamdataError):
                continue
    gone = len(image_ids) - len(found)
    where = roots[0][1] if len(roots) == 1 else "the input folders"
    notes += [f"{gone} of the raw images shown are no longer under {where}"] if gone else []
    return found, "; ".join(notes)


def _build_card(folder: Path, build: Build) -> h.Section:
    cfg = build.config
    pre = build.preprocess
    split = thaw(build.split_record)
    source = build.input
    facts = _common_facts(build) + [
        ("input", f"{source.get('root')} ({source.get('layout')} layout, {source.get('rows')} metadata rows)" if source else None),
        ("split", ", ".join(f"{k} {v}" for k, v in split.items())),
        ("image", f"{pre.get('size')} (w, h), {cfg.get('format')} quality {cfg.get('quality')}, {cfg.get('shard_size')} samples per tar"),
        ("hair removal", f"kernel {pre.get('hair_kernel')}, threshold {pre.get('hair_threshold')}, inpaint radius {pre.get('inpaint_radius')}"
         if pre.get("hair_removal") else "off"),
        ("CLAHE", f"clip {pre.get('clahe_clip')}, {pre.get('clahe_tiles')}x{pre.get('clahe_tiles')} tiles" if pre.get("clahe") else "off"),
        ("skipped inputs", len(build.skipped)), ("converted inputs", len(build.converted)),
        ("input warnings", "; ".join(source.get("warnings", []))),
    ]
    extra = []
    if build.skipped:
        rows = [[s.get("image_id"), s.get("file"), s.get("reason")] for s in build.skipped]
        extra += ["<h3>Skipped inputs</h3>", h.table(["image_id", "file", "reason"], rows, MAX_ROWS)]
    if build.converted:
        rows = [[s.get("image_id"), s.get("file"), "; ".join(s.get("notes", []))] for s in build.converted]
        extra += ["<h3>Converted inputs</h3>", h.table(["image_id", "file", "conversions"], rows, MAX_ROWS)]
    return _card_section(folder, build, facts, extra)


def _build_page(folder: Path, per_class: int, seed: int) -> list[h.Section]:
    build, manifest = Build.open(folder), read_manifest(folder)
    classes = build.classes
    chosen = choose_samples(manifest, per_class, seed, classes)
    scan = scan_shards(folder, build.shards, {k for keys in chosen.values() for k in keys} | pair_keys(build))
    rows = manifest.set_index("key")
    files = input_files(build)  # one opening of each input for the samples and the duplicate pairs
    raw, raw_note = _raw_sources(files, [rows.at[k, "image_id"] for keys in chosen.values() for k in keys])
    try:
        cfg = PreprocessConfig.from_dict(build.preprocess) if build.config.get("preprocess") is not None else None
    except (KeyError, TypeError, HamdataError):
        cfg = None
    steps = " + ".join(n for n, on in (("hair removal", cfg and cfg.hair_removal), ("CLAHE", cfg and cfg.clahe)) if on) or "no filters"
    samples = h.Section("samples", "Samples before and after preprocessing").add(
        f"<p>Per class, up to {per_class} samples drawn with seed {seed}: the raw input, the input after hair removal "
        f"alone, and the stored image ({h.esc(steps)}, then resized). The check mark says that preprocessing the raw "
        "file again gives the stored bytes exactly.</p>")
    if raw_note:
        samples.add(h.note(raw_note))
    fmt, quality = build.image_format, build.quality
    for dx in classes:
        cards = [_before_after(key, rows.loc[key], scan, raw.get(rows.at[key, "image_id"]), cfg, fmt, quality)
                 for key in chosen[dx]]
        samples.add(*_class_block(dx, int((manifest["dx"] == dx).sum()), cards))
    sections = [_build_card(folder, build), _distribution_section(_records(manifest, scan.meta), scan.problems, classes),
                collections_section(build, manifest, scan.meta), samples, duplicates_section(build, scan.images, files)]
    return [s for s in sections if s is not None]  # a format 1 build has no collections; most have no duplicates


def _class_block(dx: str, total: int, cards: list[str]) -> list[str]:
    title = f"<h3>{h.esc(dx)}: {h.esc(CLASS_NAMES.get(dx, ''))} ({total} samples, {len(cards)} shown)</h3>"
    return [title, f'<div class="grid">{"".join(cards)}</div>' if cards else h.muted("no samples of this class")]


def _stored_figure(key: str, scan: Scan, label: str = "stored") -> tuple[str, np.ndarray | None]:
    ext, data = scan.images.get(key, ("", b""))
    rgb = _decode(data) if data else None
    if rgb is None:
        return f'<p class="bad">{h.esc(key)}: image not readable from its shard</p>', None
    uri, size = h.thumbnail(rgb)
    return h.figure(h.img(uri, f"{label} {key}", size), f"{label} {rgb.shape[1]}x{rgb.shape[0]} {ext}"), rgb


def _before_after(key: str, row, scan: Scan, raw: bytes | None, cfg, fmt: str, quality: int) -> str:
    stored, _ = _stored_figure(key, scan)
    figures, verdict = [], ""
    rgb = _decode(raw) if raw else None
    if rgb is not None:
        uri, size = h.thumbnail(rgb)
        figures.append(h.figure(h.img(uri, f"raw {key}", size), f"raw {rgb.shape[1]}x{rgb.shape[0]}"))
        if cfg is not None and cfg.hair_removal:
            hairless = preprocess(rgb, dataclasses.replace(cfg, clahe=False, size=size))
            figures.append(h.figure(h.img(h.thumbnail(hairless)[0], f"hair removed {key}", size), "hair removed"))
        if cfg is not None:
            again = hashlib.sha256(encode_image(preprocess(rgb, cfg), fmt, quality)).hexdigest()
            verdict = ('<span class="ok">&#10003; raw file reproduces the stored image</span>' if again == row["sha256"]
                       else '<span class="bad">&#10007; raw file no longer gives the stored image</span>')
    meta = scan.meta.get(key) or {}
    about = ", ".join(str(meta[k]) for k in ("sex", "age", "localization") if meta.get(k) not in (None, ""))
    return (f'<div class="card"><div class="row">{"".join(figures)}{stored}</div>'
            f'<div><span class="mono">{h.esc(key)}</span> &middot; {h.esc(row["split"])} &middot; lesion {h.esc(row["lesion_id"])}'
            f'<br>{h.esc(about)} {verdict}</div></div>')


def _balanced_page(folder: Path, per_class: int, seed: int) -> list[h.Section]:
    card, manifest = Build.open(folder), read_manifest(folder)
    cfg = card.config
    classes = card.classes
    copies = manifest[manifest["source"] == "augmented"]
    chosen = choose_samples(copies, per_class, seed, classes)
    for dx in classes:  # a class with no copies shows the originals it kept
        if not chosen[dx]:
            chosen[dx] = choose_samples(manifest[manifest["dx"] == dx], per_class, seed, classes)[dx]
    rows = manifest.set_index("key")
    keys = {k for ks in chosen.values() for k in ks}
    parents = {rows.at[k, "parent"] for k in keys if rows.at[k, "parent"]}
    scan = scan_shards(folder, card.shards, keys | parents)
    build = _parent_build(folder, card)
    if parents - scan.images.keys() and build is not None:
        scan = scan_shards(build[0], build[1].shards_of("train"), parents - scan.images.keys(), scan)
    plan_rows = [[dx, p.get("originals"), p.get("kept"), p.get("copies"), p.get("policy")] for dx, p in card.plan.items()]
    definitions = [[name, d.get("version"), d.get("description")] for name, d in card.policy_definitions.items()]
    facts = _common_facts(card) + [
        ("target per class", cfg.get("target")), ("seed", cfg.get("seed")), ("strong policy below", cfg.get("strong_below")),
        ("built from", f"{build[0]} (dataset.json sha256 matches)" if build and build[2] else
         f"{build[0]} (its dataset.json changed since)" if build else f"{card.made_from_path} (not found)"),
        ("warnings", "; ".join(card.warnings)),
    ]
    extra = ["<h3>Plan</h3>", h.table(["class", "originals", "kept", "copies", "policy"], plan_rows),
             "<h3>Augmentation policies</h3>", h.table(["policy", "version", "what it does"], definitions)]
    samples = h.Section("samples", "Augmented copies beside their parents").add(
        f"<p>Per class, up to {per_class} augmented copies drawn with seed {seed}, each beside the original it was "
        "made from and its recipe; classes without copies show originals they kept. The check mark says that "
        "<code>hamdata.image.augment.replay(parent, recipe)</code> gives the stored bytes exactly.</p>", *[h.note(p) for p in scan.problems])
    for dx in classes:
        cards = [_copy_card(key, rows.loc[key], scan, cfg) for key in chosen[dx]]
        samples.add(*_class_block(dx, int((manifest["dx"] == dx).sum()), cards))
    return [_card_section(folder, card, facts, extra), _distribution_section(_records(manifest, scan.meta), [], classes), samples]


def _parent_build(folder: Path, card: Build) -> tuple[Path, Build, bool] | None:
    """The build a balanced set came from, its card, and whether that card is the one it was made from."""
    rel = card.made_from_path
    if not rel:
        return None
    build = (folder / rel).resolve()
    try:
        build_card = Build.open(build)
    except HamdataError:
        return None
    digest = hashlib.sha256((build / CARD_NAME).read_bytes()).hexdigest()
    return build, build_card, digest == card.made_from


def _copy_card(key: str, row, scan: Scan, cfg: dict) -> str:
    stored, copy_rgb = _stored_figure(key, scan, "copy" if row["source"] == "augmented" else "original")
    if row["source"] != "augmented":
        return (f'<div class="card"><div class="row">{stored}</div><div><span class="mono">{h.esc(key)}</span> '
                f'&middot; original kept &middot; lesion {h.esc(row["lesion_id"])}</div></div>')
    recipe = (scan.meta.get(key) or {}).get("recipe") or _json_or_none(row["recipe"])
    parent = row["parent"]
    ext, data = scan.images.get(parent, ("", b""))
    parent_rgb = _decode(data) if data else None
    figures, verdict = [], '<span class="muted">parent not found: replay not checked</span>'
    if parent_rgb is not None:
        uri, size = h.thumbnail(parent_rgb)
        figures.append(h.figure(h.img(uri, f"parent {parent}", size), f"parent {parent}"))
        if copy_rgb is not None:
            copy_ext, copy_bytes = scan.images[key]
            verdict = _replay_verdict(parent_rgb, recipe, copy_ext, cfg.get("quality", 95), copy_bytes)
    recipe_text = ", ".join(f"{k} {v}" for k, v in (recipe or {}).items())
    return (f'<div class="card"><div class="row">{"".join(figures)}{stored}</div>'
            f'<div><span class="mono">{h.esc(key)}</span> &middot; recipe: {h.esc(recipe_text)}<br>{verdict}</div></div>')


def _replay_verdict(parent_rgb: np.ndarray, recipe, fmt: str, quality: int, stored: bytes) -> str:
    try:
        from hamdata.image.augment import replay

        again = encode_image(replay(parent_rgb, recipe), fmt, quality)
    except (ImportError, HamdataError) as exc:
        return f'<span class="bad">replay failed: {h.esc(exc)}</span>'
    if again == stored:
        return '<span class="ok">&#10003; replay reproduces this copy</span>'
    return '<span class="bad">&#10007; replay gives other bytes (other library versions?)</span>'


def _json_or_none(text: str):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
