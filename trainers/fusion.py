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
  vocabulary of hamdata.vocabulary (HAM10000 ``back`` and ISIC ``posterior
  torso`` are one site), so that a build of several collections, and a
  ``predict --metadata`` CSV in either's words, encode alike. (An encoding
  stored before that, without ``site_field``, keeps reading ``localization``.)

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
from hamdata.vocabulary import unified_site

UNKNOWN = "unknown"
FIELDS = ("age", "sex", "site")  # in each sample's json (a format 1 build has only localization: mapped to a site)
HIDDEN = 128  # width of the metadata MLP's two layers


def clean_text(value) -> str:
    """A sex or site cell as the encoding sees it: lower case, ``unknown`` when empty or missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN
    text = " ".join(str(value).strip().lower().split())
    return text or UNKNOWN


def clean_age(value) -> float | None:
    """An age cell as a finite float, or None when it is missing or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        age = float(value)
    except (TypeError, ValueError):
        return None
    return age if math.isfinite(age) else None


@dataclass(frozen=True)
class MetadataEncoding:
    """How (age, sex, site) becomes a vector; fitted on train, stored as a dict."""

    age_mean: float
    age_std: float
    sexes: tuple[str, ...]  # one-hot slots, "unknown" included
    sites: tuple[str, ...]
    site_field: str = "site"  # "site": values on the one site vocabulary; "localization": as given (older runs)

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
        return 2 + len(self.sexes) + len(self.sites)

    @classmethod
    def fit(cls, records: Iterable[dict], where: str = "the train split") -> "MetadataEncoding":
        """Fit on sample records (dicts with age, sex, site or localization); an error when none carries any."""
        ages, sexes, sites = [], {UNKNOWN}, {UNKNOWN}
        informative = 0
        reader = cls(0.0, 1.0, (), ())
        for record in records:
            age, sex, site = clean_age(record.get("age")), clean_text(record.get("sex")), reader.site_in(record)
            if age is not None:
                ages.append(age)
            sexes.add(sex)
            sites.add(site)
            informative += age is not None or sex != UNKNOWN or site != UNKNOWN
        if not informative:
            raise HamdataError(f"--metadata: the samples of {where} carry no metadata (age, sex and localization all "
                               "missing); train with --no-metadata")
        mean = float(np.mean(ages)) if ages else 0.0
        std = float(np.std(ages)) if len(ages) > 1 else 1.0
        return cls(mean, std if std > 0 else 1.0, tuple(sorted(sexes)), tuple(sorted(sites)))

    def to_dict(self) -> dict:
        return {"age_mean": self.age_mean, "age_std": self.age_std, "sexes": list(self.sexes), "sites": list(self.sites),
                "site_field": self.site_field}

    @classmethod
    def from_dict(cls, record: dict) -> "MetadataEncoding":
        return cls(float(record["age_mean"]), float(record["age_std"]), tuple(record["sexes"]), tuple(record["sites"]),
                   record.get("site_field", "localization"))

    def unseen(self, sex, site) -> list[str]:
        """Values this encoding never saw in training (each is read as unknown), for a warning."""
        found = []
        if clean_text(sex) not in self.sexes:
            found.append(f"sex {clean_text(sex)!r}")
        if self.site_of(site) not in self.sites:
            found.append(f"site {clean_text(site)!r}")
        return found

    def encode(self, age=None, sex=None, site=None) -> np.ndarray:
        """float32 vector: [scaled age, age missing, one-hot sex, one-hot site]."""
        vector = np.zeros(self.dim, dtype=np.float32)
        age = clean_age(age)
        if age is None:
            vector[1] = 1.0
        else:
            vector[0] = (age - self.age_mean) / self.age_std
        sex, site = clean_text(sex), self.site_of(site)
        vector[2 + self.sexes.index(sex if sex in self.sexes else UNKNOWN)] = 1.0
        vector[2 + len(self.sexes) + self.sites.index(site if site in self.sites else UNKNOWN)] = 1.0
        return vector

    def encode_record(self, record: dict) -> np.ndarray:
        return self.encode(record.get("age"), record.get("sex"), self.site_in(record))

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
