"""Groups: images that must share a split.

Two images are in one group when they share a lesion id or a patient id (each
namespaced by its collection: ``isic2019:BCN_0000123``; the archive's own ``IL_``
and ``IP_`` ids, which ISIC 2020, ISIC 2024 and archive exports share, by ``isic:``), when they are one
image id (the later copy of an id in another input still brings its lesion
and patient ids), or when their content shows the same picture (hamdata.dedup.fingerprint).
Groups are the connected components of those links, found with a union-find.
A group is named by the smallest namespaced lesion id among its images, so a
build whose groups are its lesions splits exactly as a lesion-aware split.
"""

from __future__ import annotations

import re

import pandas as pd


class UnionFind:
    """Disjoint sets of hashable items (path halving, union by size)."""

    def __init__(self):
        self.parent: dict = {}
        self.size: dict = {}

    def find(self, item):
        parent = self.parent.setdefault(item, item)
        if parent == item:
            self.size.setdefault(item, 1)
            return item
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a, b) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]


# The ISIC archive's own lesion and patient ids (IL_1234567, IP_1234567) name one lesion or patient in every
# collection that comes from the archive (ISIC 2020 v2, ISIC 2024, archive exports): one namespace for them all.
_ARCHIVE_ID = re.compile(r"I[LP]_\d{7}")
ARCHIVE_NAMESPACE = "isic"


def lesion_key(collection: str, lesion: str) -> str:
    """A lesion or patient id in its namespace: its collection's, or the archive's for IL_/IP_ ids."""
    return f"{ARCHIVE_NAMESPACE if _ARCHIVE_ID.fullmatch(lesion) else collection}:{lesion}"


def make_groups(table: pd.DataFrame, links: pd.DataFrame | None = None, pairs=()) -> pd.Series:
    """The group name of every row of `table` (image_id, lesion_id, patient_id, collection).

    links: more rows of the same images or of dropped copies (same columns), whose lesion and patient
    ids count too. pairs: (image_id, image_id) pairs found to show the same picture.
    """
    sets = UnionFind()
    frames = [table] + ([links] if links is not None and len(links) else [])
    lesion_of: dict[str, str] = {}
    for frame in frames:
        for image, lesion, patient, collection in frame[["image_id", "lesion_id", "patient_id", "collection"]].itertuples(index=False):
            key = lesion_key(collection, lesion or image)
            sets.union(("image", image), ("lesion", key))
            if patient:
                sets.union(("image", image), ("patient", lesion_key(collection, patient)))
            if image not in lesion_of or key < lesion_of[image]:
                lesion_of[image] = key
    for a, b in pairs:
        sets.union(("image", a), ("image", b))
    name: dict = {}
    for image, key in lesion_of.items():
        root = sets.find(("image", image))
        if root not in name or key < name[root]:
            name[root] = key
    return pd.Series([name[sets.find(("image", i))] for i in table["image_id"]], index=table.index, name="group")
