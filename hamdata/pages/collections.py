"""Collections and duplicates of a build: the per-collection tables and plot that `stats` prints and saves,
and the "Collections" and "Duplicates" sections of `report`.

A build of several inputs (dataset.json format 2) records each sample's collection (json and manifest.csv
``collection``); a format 1 build, or a raw HAM10000 copy, is all ``ham10000``. dataset.json ``duplicates``
lists the pairs of a build: found by image id (``evidence.method == "image id"``: the later row was not
built) or by content (hamdata.dedup.fingerprint's method, with a similarity). The report shows each content pair side by
side: the kept image as stored in the shards, the dropped one read from its input file (a placeholder says
so when that input is gone); pairs by image id are one compact table. Pure tables first, HTML at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hamdata.pages import html as h
from hamdata.errors import HamdataError
from hamdata.split.stratified import SPLITS
from hamdata.store.card import Build
from hamdata.inputs.metadata_isic2020 import LIST_EVIDENCE as LIST_METHOD
from hamdata.inputs.vocabulary import COLLECTIONS

if TYPE_CHECKING:  # matplotlib only where a figure is drawn: build-shards prints duplicate_list_lines, ~0.4 s
    from matplotlib.figure import Figure

DEFAULT_COLLECTION = "ham10000"  # the collection of a sample that names none (format 1)
ID_METHOD = "image id"  # evidence.method of a duplicate found by its id
MAX_PAIRS = 60  # content pairs shown side by side in the report
PAIR_WIDTH = 120  # px, each thumbnail of a pair


# ------------------------------------------------------------------ tables


def _ordered(values, known) -> list[str]:
    present = {str(v) for v in values}
    return [v for v in known if v in present] + sorted(present - set(known))


def collection_column(df: pd.DataFrame) -> pd.Series:
    """Each row's collection; empty or absent (a format 1 build, a HAM10000 table) is ``ham10000``."""
    if "collection" not in df:
        return pd.Series(DEFAULT_COLLECTION, index=df.index, dtype=object)
    values = df["collection"]
    return values.where(values.notna() & (values.astype(str) != ""), DEFAULT_COLLECTION).astype(str)


def _counts(rows: pd.Series, columns: pd.Series, column_order: list[str]) -> pd.DataFrame:
    """rows x columns counts (rows: collections, known ones first), a total column and a total row."""
    table = pd.crosstab(rows, columns) if len(rows) else pd.DataFrame()
    table = table.reindex(index=_ordered(rows, COLLECTIONS), columns=column_order, fill_value=0)
    table["total"] = table.sum(axis=1)
    table = pd.concat([table, table.sum().to_frame("total").T]).astype("int64")
    table.index.name = "collection"
    table.columns.name = None
    return table


def collection_counts(df: pd.DataFrame, classes) -> pd.DataFrame:
    """Samples per collection (rows, then total) and class (columns in the order of ``classes``, then total)."""
    return _counts(collection_column(df), df["dx"].astype(str), list(classes))


def collection_split_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Samples per collection (rows, then total) and split (columns: train, val, test or all, then total)."""
    splits = df["split"].astype(str) if "split" in df else pd.Series("all", index=df.index)
    return _counts(collection_column(df), splits, _ordered(splits, (*SPLITS, "all")))


def plot_collections(table: pd.DataFrame) -> Figure:
    """Stacked bars: samples per class, one colour per collection (a ``collection_counts`` table)."""
    from hamdata.plots import new_figure

    classes = [c for c in table.columns if c != "total"]
    collections = [c for c in table.index if c != "total"]
    figure = new_figure()
    ax = figure.add_subplot()
    bottom = np.zeros(len(classes))
    for collection in collections:
        values = table.loc[collection, classes].to_numpy(dtype=float)
        ax.bar(classes, values, bottom=bottom, label=collection)
        bottom += values
    for x, total in enumerate(bottom):
        ax.annotate(str(int(total)), (x, total), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                    textcoords="offset points")
    ax.set(title="Samples per class and collection", xlabel="class (dx)", ylabel="samples")
    ax.legend(title="collection")
    return figure


def unmapped_table(unmapped, what: str = "label") -> pd.DataFrame | None:
    """dataset.json ``unmapped`` ({collection: {label: {rows, reason, inputs}}}), or ``left_out`` (image types:
    `what` "image type"), as a table; None when empty."""
    rows = []
    for collection in _ordered((unmapped or {}).keys(), COLLECTIONS):
        labels = (unmapped or {}).get(collection) or {}
        for label, entry in sorted(labels.items(), key=lambda kv: (-int(kv[1].get("rows", 0)), kv[0])):
            rows.append({"collection": collection, what: label, "rows": int(entry.get("rows", 0)),
                         "reason": entry.get("reason", ""),
                         "inputs": ", ".join(str(i) for i in entry.get("inputs", []))})
    if not rows:
        return None
    return pd.DataFrame(rows).set_index("collection")


def unmapped_rows(unmapped) -> int:
    """Rows that no class took, over every collection and label."""
    return sum(int(e.get("rows", 0)) for labels in (unmapped or {}).values() for e in (labels or {}).values())


def duplicate_list_lines(lists) -> list[str]:
    """One line per published duplicate list a build honoured (dataset.json ``duplicate_lists``)."""
    return [f"duplicate list {e.get('file')}: {e.get('pairs')} pairs, {e.get('applied')} applied, "
            f"{e.get('outside')} with an image outside the build" for e in lists or []]


def id_duplicates(build: Build) -> list:
    """The duplicates of a build found by image id."""
    return [d for d in build.duplicates if (d.get("evidence") or {}).get("method") == ID_METHOD]


def content_duplicates(build: Build) -> list:
    """The duplicates of a build found by content (in dataset.json's order)."""
    return [d for d in build.duplicates if (d.get("evidence") or {}).get("method") != ID_METHOD]


def duplicates_summary(build: Build) -> str | None:
    """One line: duplicates by id and by content, dropped and kept, same-lesion pairs; None for a format 1 build
    or a balanced set."""
    if not build.knows_duplicates:
        return None
    by_id, by_content = id_duplicates(build), content_duplicates(build)
    dropped = sum(d.get("action") == "dropped" for d in by_id + by_content)
    search = build.duplicate_search
    if search.get("searched") is False:
        content = "no search by content (--no-duplicate-search)"
    else:
        content = (f"{len(by_content)} by content ({search.get('method')}, threshold {search.get('threshold')}, "
                   f"{search.get('fingerprinted', 0)} images fingerprinted)")
    listed = [d for d in by_content if (d.get("evidence") or {}).get("method") == LIST_METHOD]
    if listed:
        content = f"{len(listed)} by a published duplicate list, " + content.replace(
            f"{len(by_content)} by content", f"{len(by_content) - len(listed)} by content", 1)
    return (f"duplicates: {len(by_id)} by image id, {content}; {dropped} dropped, "
            f"{len(by_id) + len(by_content) - dropped} kept (--keep-duplicates); "
            f"{search.get('same_lesion_pairs', 0)} same-lesion pairs (photos of one lesion, not duplicates)")


# ------------------------------------------------------------------ report sections


def pair_keys(build: Build) -> set[str]:
    """Keys of the shown content pairs' images (kept and dropped: with --keep-duplicates both are stored)."""
    return {str(d.get(k)) for d in content_duplicates(build)[:MAX_PAIRS] for k in ("kept", "dropped")}


def _input_name(inputs: dict, index) -> str:
    entry = inputs.get(index)
    return f"{index}: {entry.get('root')}" if entry else f"{index}"


def collections_section(build: Build, manifest: pd.DataFrame, meta: dict) -> h.Section | None:
    """Inputs, samples per collection and class (table and plot) and split, labels no class took, groups and
    the duplicate search; None for a format 1 build (no ``inputs``). meta: key -> json record of every sample."""
    if not build.has_inputs:
        return None
    collections = manifest["collection"].nunique() if "collection" in manifest.columns else 1
    several = len(build.inputs) > 1 or collections > 1
    if not several and not any(build.unmapped.values()) and not any(build.left_out.values()):
        return None  # one input, every row taken: the build card says it all
    section = h.Section("collections", "Collections")
    built = pd.Series([m.get("input") for m in meta.values()], dtype=object).value_counts()
    rows = [[i.get("index"), i.get("root"), i.get("layout"), i.get("collection"), i.get("rows"),
             int(built.get(i.get("index"), 0)), "there" if i.get("root") and Path(i["root"]).is_dir() else "gone"]
            for i in build.inputs]
    section.add("<h3>Inputs</h3>", h.table(["input", "root", "layout", "collection", "table rows", "samples built",
                                            "input folder now"], rows))
    counts = collection_counts(manifest, build.classes)
    section.add("<h3>Samples per collection and class</h3>", h.frame(counts),
                "<h3>Samples per collection and split</h3>", h.frame(collection_split_counts(manifest)),
                f'<div class="plots">{h.img(h.figure_uri(plot_collections(counts)), "plot")}</div>')
    unmapped = unmapped_table(build.unmapped)
    if unmapped is not None:
        section.add(f"<h3>Labels no class took ({unmapped_rows(build.unmapped)} rows)</h3>", h.frame(unmapped))
    left_out = unmapped_table(build.left_out, "image type")
    if left_out is not None:
        section.add(f"<h3>Image types left out ({unmapped_rows(build.left_out)} rows)</h3>", h.frame(left_out))
    groups = build.groups
    return section.add(h.facts([
        ("groups (never split)", f"{groups.get('count')}, the largest {groups.get('largest')} images, "
                                 f"{groups.get('with_several_lesions')} with several lesions" if groups else None),
        ("duplicates", duplicates_summary(build))]))


class InputFiles:
    """The input files of a build, read on demand through hamdata.inputs.layouts (each input opened once)."""

    def __init__(self, inputs: list[dict]):
        self.inputs = {i.get("index"): i for i in inputs or []}
        self._sources: dict = {}

    def source(self, index):
        """(the opened input ``index``, "") or (None, why it cannot be read); each input is opened once."""
        from hamdata.inputs.layouts import open_source

        if index not in self._sources:
            root = (self.inputs.get(index) or {}).get("root")
            try:
                self._sources[index] = (open_source(Path(root)), "")
            except HamdataError as exc:
                self._sources[index] = (None, str(exc))
        return self._sources[index]

    def read(self, index, image_id: str) -> tuple[bytes | None, str]:
        """The bytes of one image of input ``index``, or None and why not."""
        from hamdata.inputs.containers import read_image_bytes

        root = (self.inputs.get(index) or {}).get("root")
        if not root:
            return None, f"dataset.json names no input {index}"
        if not Path(root).is_dir():
            return None, f"input {index} is gone: {root} no longer exists"
        source, error = self.source(index)
        if source is None:
            return None, f"input {index} at {root} cannot be read: {error}"
        locator = source.images.get(image_id)
        if locator is None:
            return None, f"{image_id} is no longer in input {index} ({root})"
        try:
            return read_image_bytes(locator), ""
        except HamdataError as exc:
            return None, str(exc)


def _thumbnail(data: bytes | None, role: str, image_id: str, caption: str, why: str) -> str:
    from hamdata.image.preprocess import decode_image

    rgb = None
    if data:
        try:
            rgb = decode_image(data)[0]
        except HamdataError as exc:
            why = f"{image_id}: not a readable image ({exc})"
    if rgb is None:
        return h.placeholder(why, f"{role} {image_id}", PAIR_WIDTH)
    uri, size = h.thumbnail(rgb, PAIR_WIDTH)
    return h.figure(h.img(uri, f"{role} {image_id}", size), f"{caption} {rgb.shape[1]}x{rgb.shape[0]}")


def _pair_card(d: dict, stored: dict, files: InputFiles) -> str:
    kept, dropped = str(d.get("kept")), str(d.get("dropped"))
    if kept in stored:
        kept_figure = _thumbnail(stored[kept][1], "kept", kept, "kept, stored", "")
    else:  # not in the shards (skipped as unreadable?): its input file
        data, why = files.read(d.get("kept_input"), kept)
        kept_figure = _thumbnail(data, "kept", kept, "kept, input file", why)
    if dropped in stored:  # --keep-duplicates: both are in the build
        dropped_figure = _thumbnail(stored[dropped][1], "also kept", dropped, "also kept, stored", "")
    else:
        data, why = files.read(d.get("input"), dropped)
        dropped_figure = _thumbnail(data, "dropped", dropped, "dropped, input file", why)
    evidence = d.get("evidence") or {}
    similarity = evidence.get("similarity")
    score = f"{similarity:.4f}" if isinstance(similarity, (int, float)) else "?"
    why = (f'listed in {h.esc(Path(str(evidence.get("file"))).name)} ({h.esc(evidence.get("method"))})'
           if evidence.get("method") == LIST_METHOD else
           f'similarity {score} ({h.esc(evidence.get("method"))}, threshold {h.esc(evidence.get("threshold"))})')
    return (f'<div class="card pair"><div class="row">{kept_figure}{dropped_figure}</div><div>'
            f'kept <span class="mono">{h.esc(kept)}</span> from input {h.esc(_input_name(files.inputs, d.get("kept_input")))}'
            f'<br>{"dropped" if d.get("action") == "dropped" else "also kept"} <span class="mono">{h.esc(dropped)}</span> '
            f'from input {h.esc(_input_name(files.inputs, d.get("input")))}'
            f'<br>{why} &middot; {h.esc(d.get("action"))}</div></div>')


def input_files(build: Build) -> InputFiles:
    """The InputFiles of a build: its inputs (a format 1 build: its one input, as input 0)."""
    return InputFiles(build.input_list)


def duplicates_section(build: Build, stored: dict, files: InputFiles) -> h.Section | None:
    """Content pairs side by side (up to MAX_PAIRS) and pairs by image id as a table; None without duplicates.

    stored: key -> (ext, bytes) of the images read from the shards (``pair_keys`` were asked for).
    files: the build's input files, shared with the rest of the page (each input opened once).
    """
    by_id, by_content = id_duplicates(build), content_duplicates(build)
    if not by_id and not by_content:
        return None
    section = h.Section("duplicates", "Duplicates").add(f"<p>{h.esc(duplicates_summary(build))}</p>")
    if by_content:
        section.add(f"<h3>The same picture under another id ({len(by_content)} pairs, found by content)</h3>",
                    "<p>Each pair: the kept image as stored in the shards (preprocessed), beside the other image as "
                    "its input file holds it: a dropped image is not in the build, so it is read from its input, "
                    "which may be gone (with --keep-duplicates both are stored and shown so).</p>",
                    '<div class="grid">' + "".join(_pair_card(d, stored, files) for d in by_content[:MAX_PAIRS]) + "</div>")
        if len(by_content) > MAX_PAIRS:
            section.add(h.muted(f"and {len(by_content) - MAX_PAIRS} more, listed in dataset.json (duplicates)"))
    if by_id:
        rows = [[d.get("dropped"), _input_name(files.inputs, d.get("kept_input")), _input_name(files.inputs, d.get("input")),
                 d.get("action"), (d.get("evidence") or {}).get("detail")] for d in by_id]
        section.add(f"<h3>The same image id in several inputs or rows ({len(by_id)})</h3>",
                    h.table(["image id", "kept input", "dropped input", "action", "evidence"], rows, h.MAX_ROWS))
    return section
