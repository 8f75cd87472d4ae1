"""Scale check of duplicates in a real build: a full-size synthetic HAM10000 beside a synthetic ISIC 2019
folder with planted copies, built with and without the search by content.

    python bench/dedup_build.py --work /tmp/dedup-bench            # 10,015 + 5,000 images, 500 planted
    python bench/dedup_build.py --work /tmp/d --isic 1000 --new-id 100 --same-id 20 --ham-metadata none --ham 1000

Prints, and writes to WORK/result.json: the planted copies found (by id and by content), the false merges
(pairs the build reports that were not planted: copies of each other that synth did not make), and the
images/s of both builds (the same images and options; the search is the only difference).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hamdata.build import BuildConfig, build_shards  # noqa: E402
from hamdata.inputs.metadata_isic import isic_id  # noqa: E402
from hamdata.image.preprocess import PreprocessConfig  # noqa: E402
from hamdata.synth.ham import make_synthetic  # noqa: E402
from hamdata.synth.isic import write_isic2019  # noqa: E402

REAL_METADATA = REPO.parent / "shared" / "data" / "ham10000" / "HAM10000_metadata.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--ham", type=int, default=10015, help="synthetic HAM10000 images (without --ham-metadata)")
    parser.add_argument("--ham-metadata", default=str(REAL_METADATA), help="draw HAM ids, lesions, labels from this CSV ('none': random)")
    parser.add_argument("--isic", type=int, default=5000, help="ISIC 2019 images drawn (the copies come on top)")
    parser.add_argument("--new-id", type=int, default=400, help="copies of HAM images under new ids")
    parser.add_argument("--same-id", type=int, default=50, help="copies of HAM images under their own ids")
    parser.add_argument("--within", type=int, default=50, help="copies of ISIC images under new ids")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--classes", default="isic2019", help="class set of both builds (isic2019 keeps SCC, so "
                                                              "every planted pair is in them)")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    ham, isic = work / "ham", work / "isic"
    if not ham.is_dir():
        metadata = None if args.ham_metadata == "none" else args.ham_metadata
        make_synthetic(ham, n_images=args.ham, seed=1, metadata=metadata, workers=args.workers)
    if not isic.is_dir():
        write_isic2019(isic, images=args.isic, seed=2, duplicates_of=str(ham), same_id=args.same_id,
                       new_id=args.new_id, within=args.within, workers=args.workers)
    with open(isic / "planted_duplicates.csv", newline="") as f:
        planted = list(csv.DictReader(f))
    for p in planted:  # the build's image ids drop ISIC 2019's _downsampled suffix
        p["copy_id"], p["original_id"] = isic_id(p["copy_id"]), isic_id(p["original_id"])
    result = {}
    for search in (False, True):
        out = work / ("with-search" if search else "without-search")
        shutil.rmtree(out, ignore_errors=True)
        cfg = BuildConfig(data=(str(ham), str(isic)), out=str(out), find_duplicates=search, classes=args.classes,
                          preprocess=PreprocessConfig(size=(args.size, args.size)))
        started = time.perf_counter()
        summary = build_shards(cfg, workers=args.workers)
        seconds = time.perf_counter() - started
        card = json.loads((out / "dataset.json").read_text())
        images = sum(i["rows"] for i in card["inputs"])  # every input image was read, kept or dropped
        result["with" if search else "without"] = {
            "seconds": round(seconds, 1), "samples": summary["samples"],
            "input_images_per_second": round(images / seconds, 2), "duplicates": len(card["duplicates"])}
        if search:
            listed = {(d["dropped"], d["kept"]) for d in card["duplicates"]}
            by_content = {d["dropped"]: d["kept"] for d in card["duplicates"] if d["evidence"]["method"] != "image id"}
            found, missed = 0, []
            for p in planted:
                if p["kind"] == "same_id":
                    hit = (p["copy_id"], p["copy_id"]) in listed
                else:  # the copy, or its original, dropped in favour of the other
                    hit = by_content.get(p["copy_id"]) == p["original_id"] or by_content.get(p["original_id"]) == p["copy_id"]
                found += hit
                if not hit:
                    missed.append(p)
            planted_pairs = {frozenset((p["copy_id"], p["original_id"])) for p in planted}
            false = [d for d in card["duplicates"] if d["evidence"]["method"] != "image id"
                     and frozenset((d["dropped"], d["kept"])) not in planted_pairs]
            result["planted"] = len(planted)
            result["found"] = found
            result["missed"] = missed[:20]
            result["false_merges"] = len(false)
            result["false_merge_examples"] = false[:10]
            result["same_lesion_pairs"] = card["duplicate_search"]["same_lesion_pairs"]
    ratio = result["with"]["input_images_per_second"] / result["without"]["input_images_per_second"]
    result["speed_ratio"] = round(ratio, 3)
    (work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
