"""The ISIC archive's two hierarchies: diagnoses (``diagnosis_1..5``) and anatomic sites (``anatom_site_1..5``).

Since 2024 the archive gives a diagnosis as a path of up to five levels, from
``Benign`` / ``Indeterminate`` / ``Malignant`` down to, say, ``Nevus, NOS,
Compound``; since 2026 it gives the site the same way (``Trunk > Posterior
trunk > Upper back``) and no longer fills ``anatom_site_general``. Both trees
are copied, node for node, from ImageMarkup/isic-metadata
(``isic_metadata/diagnosis_hierarchical.py`` and
``isic_metadata/anatom_site_hierarchical.py`` at commit 562f25c, v5.1.0+) into
``manifests/isic_diagnosis_hierarchy.csv`` and ``manifests/isic_site_hierarchy.csv``;
the site table adds the build's site (hamdata.inputs.vocabulary.SITES) of every node.

- ``diagnosis_candidates(levels)``: the labels a label map is asked about, deepest
  first, so that ``Nevus, NOS, Compound`` falls back to ``Nevus`` when the map
  knows only that.
- ``site_of(levels, special)``: the build's site of a site path; ``anatom_site_special``
  ``acral palms or soles`` and ``oral or genital`` win over the path (the archive's
  own ``palms/soles`` and ``oral/genital`` of the old ``anatom_site_general``).
- ``unseen(levels, kind)``: the first level of a path that the tree does not
  hold (and its depth), for the one warning per value that tells a user the archive grew.
"""

from __future__ import annotations

import csv
import functools
import io

from hamdata.errors import HamdataError
from hamdata.inputs.vocabulary import SITES, shipped_file

DIAGNOSIS_FILE = "isic_diagnosis_hierarchy.csv"
SITE_FILE = "isic_site_hierarchy.csv"
DIAGNOSIS_LEVELS = tuple(f"diagnosis_{i}" for i in range(1, 6))
SITE_LEVELS = tuple(f"anatom_site_{i}" for i in range(1, 6))
SITE_SPECIAL = "anatom_site_special"
# anatom_site_special values (isic-metadata fields.py AnatomSiteSpecialEnum) that name one of the build's sites.
SPECIAL_SITES = {"acral palms or soles": "palms/soles", "oral or genital": "oral/genital"}
SPECIAL_VALUES = ("acral NOS", "nail NOS", "fingernail", "toenail", "acral palms or soles", "oral or genital")


def _key(text: str) -> str:
    return " ".join(str(text).split()).lower()


def _read(name: str) -> list[list[str]]:
    path = shipped_file(name)
    if path is None:
        raise HamdataError(f"manifests/{name} is not installed: reinstall hamdata")
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    return rows[1:]


@functools.lru_cache(maxsize=1)
def diagnosis_tree() -> frozenset[tuple[str, ...]]:
    """Every node of the diagnosis hierarchy as its path (levels as published), e.g. ("Benign", "Benign - Other")."""
    return frozenset(tuple(v for v in row if v) for row in _read(DIAGNOSIS_FILE))


@functools.lru_cache(maxsize=1)
def site_tree() -> dict[tuple[str, ...], str]:
    """Every node of the anatomic site hierarchy as its path -> the build's site."""
    table = {}
    for row in _read(SITE_FILE):
        *levels, site = row
        if site not in SITES:
            raise HamdataError(f"manifests/{SITE_FILE}: site {site!r} of {' > '.join(v for v in levels if v)} is "
                               f"not one of {', '.join(SITES)}")
        table[tuple(v for v in levels if v)] = site
    return table


@functools.lru_cache(maxsize=2)
def _lower(kind: str) -> dict[tuple[str, ...], tuple[str, ...]]:
    nodes = diagnosis_tree() if kind == "diagnosis" else site_tree()
    return {tuple(_key(v) for v in path): path for path in nodes}


def path_of(levels) -> tuple[str, ...]:
    """The filled levels of a row, top first, stopping at the first empty one."""
    out = []
    for value in levels:
        if not value:
            break
        out.append(value)
    return tuple(out)


def diagnosis_candidates(levels) -> tuple[str, ...]:
    """The labels of a diagnosis path to look up in a label map, deepest first (every filled level: a table
    edited by hand may leave a gap)."""
    return tuple(v for v in reversed(tuple(levels)) if v)


def unseen(levels, kind: str) -> tuple[str, int] | None:
    """The first level of a path (diagnosis or site) that the published tree does not hold, and its depth
    (0: the top level, which has no parent to read through), or None."""
    known = _lower(kind)
    path = tuple(_key(v) for v in path_of(levels))
    for depth in range(1, len(path) + 1):
        if path[:depth] not in known:
            return path_of(levels)[depth - 1], depth - 1
    return None


def site_of(levels, special: str = "") -> str:
    """The build's site of a site path (deepest known node), with anatom_site_special's palms/soles and
    oral/genital taking precedence; "" when neither says (the caller falls back to anatom_site_general)."""
    if _key(special) in SPECIAL_SITES:
        return SPECIAL_SITES[_key(special)]
    known, tree = _lower("site"), site_tree()
    path = tuple(_key(v) for v in path_of(levels))
    for depth in range(len(path), 0, -1):
        if path[:depth] in known:
            return tree[known[path[:depth]]]
    return ""
