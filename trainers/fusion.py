"""Metadata fusion: age, sex and anatomical site through a small MLP, concatenated with the image features.

After Gessert et al. (2019, ISIC 2019 winner): a dense network on the patient
metadata whose output joins the CNN's pooled features before the classifier.

The encoding is fitted on the build's train split only and travels with the
run (config.json, every checkpoint), so evaluate, predict and ensemble encode
a sample exactly as training did:

- age: ``(age - mean) / std`` with the train mean and std, plus a flag that is 1
  when the age is missing (the scaled value is then 0);
- sex and site: one-hot over the values seen in train, ``unknown`` included;
  a value never seen in train is read as ``unknown``. The site is the one
  vocabulary of hamdata.inputs.vocabulary (HAM10000 ``back`` and ISIC ``posterior
  torso`` are one site), so that a build of several collections, and a
  ``predict --metadata`` CSV in either's words, encode alike. (An encoding
  stored before that, without ``site_field``, keeps reading ``localization``.)

- numeric columns (``--metadata-columns``, e.g. ISIC 2024's ``tbp_lv_*``
  measurements, which a format 3 build carries in each sample's ``features``):
  each ``(value - mean) / std`` with train statistics, plus a flag that is 1
  when the value is missing (the scaled value is then 0).

During training a sample's metadata is dropped (all fields set to missing)
with a small probability, so that the model still works when a field is
absent at prediction time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hamdata.errors import HamdataError
from hamdata.inputs.vocabulary import unified_site

UNKNOWN = "unknown"
FIELDS = ("age", "sex", "site")  # in each sample's json (a format 1 build has only localization: mapped to a site)
HIDDEN = 128  # width of the metadata MLP's two layers


def clean_text(value) -> str:
    """A sex or site cell as the encoding sees it: lower case, ``unknown`` when empty or missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN
    text = " ".join(str(value).strip().lower().split())
    return text or UNKNOWN


def clean_number(value) -> float | None:
    """An age or numeric-column cell as a finite float, or None when it is missing or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class MetadataEncoding:
    """How (age, sex, site) becomes a vector; fitted on train, stored as a dict."""

    age_mean: float
    age_std: float
    sexes: tuple[str, ...]  # one-hot slots, "unknown" included
    sites: tuple[str, ...]
    site_field: str = "site"  # "site": values on the one site vocabulary; "localization": as given (older runs)
    columns: tuple[str, ...] = ()  # numeric columns of the samples' ``features`` (--metadata-columns)
    column_means: tuple[float, ...] = ()
    column_stds: tuple[float, ...] = ()

    def site_of(self, value) -> str:
        """A site cell as this encoding reads it."""
        text = clean_text(value)
        return (unified_site(text) or text) if self.site_field == "site" else text

    def site_in(self, record: dict) -> str:
        """The site of a sample record (its ``site``, else its ``localization``)."""
        value = record.get("site") if self.site_field == "site" else None
        return self.site_of(value if value else record.get("localization"))

    @property
    def dim(self) -> int:
        return 2 + len(self.sexes) + len(self.sites) + 2 * len(self.columns)

    @classmethod
    def fit(cls, records: Iterable[dict], where: str = "the train split", columns=()) -> "MetadataEncoding":
        """Fit on sample records (dicts with age, sex, site or localization, and ``features`` for `columns`); an
        error when none carries any."""
        ages, sexes, sites = [], {UNKNOWN}, {UNKNOWN}
        values: list[list[float]] = [[] for _ in columns]
        informative = 0
        reader = cls(0.0, 1.0, (), ())
        for record in records:
            age, sex, site = clean_number(record.get("age")), clean_text(record.get("sex")), reader.site_in(record)
            if age is not None:
                ages.append(age)
            sexes.add(sex)
            sites.add(site)
            numbers = [clean_number((record.get("features") or {}).get(c)) for c in columns]
            for bucket, number in zip(values, numbers):
                if number is not None:
                    bucket.append(number)
            informative += age is not None or sex != UNKNOWN or site != UNKNOWN or any(n is not None for n in numbers)
        if not informative:
            raise HamdataError(f"--metadata: the samples of {where} carry no metadata (age, sex and localization all "
                               "missing); train with --no-metadata")
        mean = float(np.mean(ages)) if ages else 0.0
        std = float(np.std(ages)) if len(ages) > 1 else 1.0
        means = tuple(float(np.mean(v)) if v else 0.0 for v in values)
        stds = tuple(float(np.std(v)) if len(v) > 1 and np.std(v) > 0 else 1.0 for v in values)
        return cls(mean, std if std > 0 else 1.0, tuple(sorted(sexes)), tuple(sorted(sites)), "site", tuple(columns),
                   means, stds)

    def to_dict(self) -> dict:
        record = {"age_mean": self.age_mean, "age_std": self.age_std, "sexes": list(self.sexes),
                  "sites": list(self.sites), "site_field": self.site_field}
        if self.columns:  # an encoding without columns stays the dict it always was
            record.update(columns=list(self.columns), column_means=list(self.column_means),
                          column_stds=list(self.column_stds))
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "MetadataEncoding":
        return cls(float(record["age_mean"]), float(record["age_std"]), tuple(record["sexes"]), tuple(record["sites"]),
                   record.get("site_field", "localization"), tuple(record.get("columns", ())),
                   tuple(float(v) for v in record.get("column_means", ())),
                   tuple(float(v) for v in record.get("column_stds", ())))

    def unseen(self, sex, site) -> list[str]:
        """Values this encoding never saw in training (each is read as unknown), for a warning."""
        found = []
        if clean_text(sex) not in self.sexes:
            found.append(f"sex {clean_text(sex)!r}")
        if self.site_of(site) not in self.sites:
            found.append(f"site {clean_text(site)!r}")
        return found

    def encode(self, age=None, sex=None, site=None, features: dict | None = None) -> np.ndarray:
        """float32 vector: [scaled age, age missing, one-hot sex, one-hot site, (scaled value, missing) per column]."""
        vector = np.zeros(self.dim, dtype=np.float32)
        base = 2 + len(self.sexes) + len(self.sites)
        for k, (column, mean, std) in enumerate(zip(self.columns, self.column_means, self.column_stds)):
            number = clean_number((features or {}).get(column))
            if number is None:
                vector[base + 2 * k + 1] = 1.0
            else:
                vector[base + 2 * k] = (number - mean) / std
        age = clean_number(age)
        if age is None:
            vector[1] = 1.0
        else:
            vector[0] = (age - self.age_mean) / self.age_std
        sex, site = clean_text(sex), self.site_of(site)
        vector[2 + self.sexes.index(sex if sex in self.sexes else UNKNOWN)] = 1.0
        vector[2 + len(self.sexes) + self.sites.index(site if site in self.sites else UNKNOWN)] = 1.0
        return vector

    def encode_record(self, record: dict) -> np.ndarray:
        return self.encode(record.get("age"), record.get("sex"), self.site_in(record), record.get("features"))

    def missing(self) -> np.ndarray:
        """The vector of a sample whose every field is missing."""
        return self.encode()


def drop_metadata(vectors: np.ndarray, missing: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``vectors`` (B, D) in which each row is replaced by ``missing`` with probability ``p``."""
    out = np.array(vectors, dtype=np.float32, copy=True)
    if p > 0 and len(out):
        out[rng.random(len(out)) < p] = missing
    return out


class FusionNet(nn.Module):
    """A backbone without its classifier, a metadata MLP, and one linear classifier over both.

    ``forward(x, meta)``: meta is (B, dim) float; None means every field missing.
    """

    def __init__(self, backbone: nn.Module, features: int, missing: np.ndarray, num_classes: int, hidden: int = HIDDEN):
        super().__init__()
        self.backbone = backbone
        self.meta = nn.Sequential(
            nn.Linear(len(missing), hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(0.3),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(features + hidden, num_classes)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)
        self.register_buffer("missing", torch.as_tensor(np.asarray(missing, dtype=np.float32)))

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        features = self.backbone(x)
        if meta is None:
            meta = self.missing.expand(len(x), -1)
        meta_features = self.meta(meta.to(device=features.device, dtype=torch.float32))
        return self.classifier(torch.cat([features, meta_features.to(features.dtype)], 1))
