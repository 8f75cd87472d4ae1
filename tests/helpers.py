"""Helpers shared by test files (imported as `from helpers import ...`; not a test file, not a conftest).

Small synthetic data sets and builds (made once per session where a test only reads them), the CLI run in
this process, test doubles (a poisoned loss, no network), and the CLI as a real subprocess that a test SIGKILLs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ small synthetic data sets and builds
# Every test file that needs synthetic images, or a build of them, gets them here. synthetic_data and
# build_once make each one once per test session, in a folder named after the arguments, and share it
# with every test file that asks for the same one: read it, never write into it (copy it first).
# synthetic_build makes a build of its own, for a test that writes into it.


# The real HAM10000 sample (the full metadata table and 23 images) lives in the project's shared folder, never in
# the repository; where it is absent (a user's machine), every test that needs it skips with this one reason.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000"
REAL_SAMPLE_MISSING = (f"the real HAM10000 sample is not here ({SHARED}: the full metadata table and 23 images, kept "
                       f"in the project's shared folder only, as on a user's machine)")


def real_sample_present() -> bool:
    return (SHARED / "HAM10000_metadata.csv").is_file() and (SHARED / "images").is_dir()


def _table(n_images: int, metadata: str | Path | None) -> str:
    """What a synthetic set is drawn from, for a folder name: ``n_images`` random rows, or a metadata CSV
    (named after the file and a digest of its bytes, so that different tables never share a folder)."""
    if metadata is None:
        return str(n_images)
    return f"{Path(metadata).stem}-{hashlib.sha256(Path(metadata).read_bytes()).hexdigest()[:12]}"


# Synthetic pictures for tests are drawn at half HAM10000's size: a quarter of the pixels to draw, encode, decode and
# clean of hair, which is what a build of them costs. No test's claim here needs 600x450 sources; test_synth checks
# the full-size drawing, and the real sample is full size.
SOURCE_SIZE = (300, 225)


def shared_root(factory: pytest.TempPathFactory) -> Path:
    """The folder that every worker of this test run shares: under pytest-xdist each worker has a base folder of its
    own (``.../pytest-N/popen-gw0``), and the run's is its parent; without xdist the base folder itself."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def made_once(path: Path):
    """Hold an exclusive lock named after ``path`` while the caller makes ``path`` if it is missing, so that two
    workers asking for the same thing at once make it once and the second waits for it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.made-once", "w") as lock:  # not hamdata's own .NAME.lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def synthetic_data(factory: pytest.TempPathFactory, n_images: int, seed: int = 0,
                   metadata: str | Path | None = None, image_size: tuple[int, int] = SOURCE_SIZE) -> Path:
    """Synthetic HAM10000 images in the Kaggle layout (one worker), made once per test run (across pytest-xdist
    workers) and shared.

    With ``metadata`` (a HAM10000-style CSV) its rows are drawn and ``n_images`` is ignored.
    """
    from hamdata.synth.ham import make_synthetic

    size = "" if image_size == SOURCE_SIZE else f"-{image_size[0]}x{image_size[1]}"
    data = shared_root(factory) / f"synth-{_table(n_images, metadata)}-seed{seed}{size}" / "data"
    with made_once(data):
        if not data.is_dir():  # make_synthetic's folder appears complete or not at all
            make_synthetic(data, n_images=n_images, seed=seed, metadata=metadata, workers=1, progress=False,
                           image_size=image_size)
    return data


def synthetic_build(root: Path, n_images: int, size: int, shard_size: int, seed: int = 0,
                    metadata: str | Path | None = None, image_size: tuple[int, int] = SOURCE_SIZE,
                    min_per_class: int = 0, **preprocess) -> Path:
    """A build of its own: synthetic images (``image_size``) in ``root/data``, built at ``size`` px into
    ``root/shards`` (one worker); returns the latter. ``preprocess``: other PreprocessConfig options
    (``hair_removal=False``, ...).

    With ``metadata`` (a HAM10000-style CSV) its rows are drawn and ``n_images`` is ignored. ``min_per_class``:
    images of every class at least (make_synthetic), else HAM10000's proportions.
    """
    from hamdata.build import BuildConfig, build_shards
    from hamdata.image.preprocess import PreprocessConfig
    from hamdata.synth.ham import make_synthetic

    make_synthetic(root / "data", n_images=n_images, seed=seed, metadata=metadata, workers=1, progress=False,
                   image_size=image_size, min_per_class=min_per_class)
    cfg = BuildConfig(data=str(root / "data"), out=str(root / "shards"), shard_size=shard_size,
                      preprocess=PreprocessConfig(size=(size, size), **preprocess))
    build_shards(cfg, workers=1, progress=False)
    return root / "shards"


def build_once(factory: pytest.TempPathFactory, n_images: int, size: int, shard_size: int = 500,
               metadata: str | Path | None = None, seed: int = 0, image_size: tuple[int, int] = SOURCE_SIZE,
               min_per_class: int = 0, **preprocess) -> Path:
    """``synthetic_build`` made once per test run (across pytest-xdist workers) and shared by every test file that
    asks for the same one; the images it was built from are in ``build.parent / "data"``. conftest.py's `build`
    fixture, which most test files read, is ``build_once(factory, 160, 32, shard_size=25)``.
    """
    options = "".join(f"-{name}={value}" for name, value in sorted(preprocess.items()))
    if image_size != SOURCE_SIZE:
        options += f"-from-{image_size[0]}x{image_size[1]}"
    if min_per_class:
        options += f"-min{min_per_class}"
    root = shared_root(factory) / f"build-{_table(n_images, metadata)}-seed{seed}-{size}-{shard_size}{options}"
    with made_once(root):
        if not (root / "shards" / "dataset.json").is_file():  # build_shards moves a finished build into place
            shutil.rmtree(root, ignore_errors=True)
            synthetic_build(root, n_images, size, shard_size, seed=seed, metadata=metadata, image_size=image_size,
                            min_per_class=min_per_class, **preprocess)
    return root / "shards"


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by its relative POSIX path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def shard_members(folder: Path):
    """(name, bytes) of every member of every tar that ``folder``'s dataset.json lists, in its order; read with
    json and tarfile alone, no hamdata code."""
    import json
    import tarfile

    card = json.loads((folder / "dataset.json").read_text())
    for shard in card["shards"]:
        with tarfile.open(folder / shard["path"]) as tar:
            for member in tar.getmembers():
                yield member.name, tar.extractfile(member).read()


# ------------------------------------------------------------------ the CLI in this process


def cli(*args):
    """`cli.py ARGS` in this process (CliRunner; each argument passed through str). Whatever the exit code:
    no exception but the SystemExit that carries it, and no traceback in the output."""
    from click.testing import CliRunner

    from cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def one_error_line(result, *needles: str) -> str:
    """A refusal as a user sees it: exit 2 and exactly one line on stderr, ``error: ...``, holding each of
    ``needles``; returns that line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def cli_error(*args) -> str:
    """The one ``error:`` line of `cli.py ARGS`, which must exit 2."""
    return one_error_line(cli(*args))


def verify(folder: Path) -> tuple[int, list[str]]:
    """Exit code and problem lines (stdout) of `verify FOLDER`: (0, []) when it says the folder is intact;
    otherwise the last line on stderr counts the problems."""
    result = cli("verify", folder)
    lines = result.stdout.splitlines()
    if result.exit_code == 0:
        assert result.stdout.startswith(f"verify: {folder} is intact"), result.output
        return 0, []
    assert result.stderr.splitlines()[-1] == f"verify: {len(lines)} problems in {folder}", result.output
    return result.exit_code, lines


# ------------------------------------------------------------------ test doubles


def pil_bytes(image, fmt: str, **options) -> bytes:
    """``image`` (a PIL image) encoded by Pillow as ``fmt`` ("JPEG", "PNG", ...) with ``options``."""
    import io

    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def poison_the_loss(monkeypatch: pytest.MonkeyPatch, value: float, at_call: int) -> None:
    """The focal loss times ``value`` (nan, inf) at its ``at_call``-th call, unchanged at every other."""
    from trainers import losses

    calls = {"n": 0}
    original = losses.FocalLoss.forward

    def poisoned(self, logits, target):
        calls["n"] += 1
        loss = original(self, logits, target)
        return loss * value if calls["n"] == at_call else loss

    monkeypatch.setattr(losses.FocalLoss, "forward", poisoned)


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's model constructor fails as it does on a machine without network (no ImageNet weights)."""
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models, "get_model", offline)


# ------------------------------------------------------------------ CLI subprocesses and SIGKILL


def start_cli(args: list[str], cwd: Path, hook: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python cli.py ARGS` in ``cwd``; with ``hook`` (Python source, may be empty), `python -c` runs the hook
    and then `cli.main()` with ARGS as its argv. Output is discarded, stderr is piped."""
    if hook is None:
        command = [sys.executable, str(REPO / "cli.py"), *args]
    else:
        program = f"import sys; sys.path.insert(0, {str(REPO)!r})\n{hook}\nimport cli\nsys.argv = ['cli.py'] + {args!r}\ncli.main()\n"
        command = [sys.executable, "-c", program]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def wait_until(proc: subprocess.Popen, ready, what: str, command: str, timeout: float = 60.0,
               poll: float = 0.005) -> None:
    """Poll ``ready()`` every ``poll`` s; fail if the ``command`` subprocess ends first or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{command} ended (exit {proc.returncode}) before {what}: {proc.stderr.read().decode()[-500:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(poll)


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that still exist and are not zombies waiting to be reaped."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


def kill(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the process alone (not its group), as `kill -9 PID` does; returns its children (the workers)."""
    workers = children(proc.pid) if sys.platform.startswith("linux") else []
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return workers


def wait_killed(proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait for a command that a hook (kill_after, KILL_BETWEEN_RENAMES, ...) SIGKILLs from inside."""
    proc.wait(timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-800:]
    proc.stderr.close()


def assert_workers_gone(workers: list[int]) -> None:
    """Pool workers end with the killed process (they hold their own end of the task pipe, so must be told)."""
    deadline = time.monotonic() + 10
    while running(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = running(workers)
    for pid in left:  # do not leave them behind for the rest of the session
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"worker processes {left} outlived the killed build"


# Deterministic kill points: hooks (Python source for start_cli) after which the subprocess SIGKILLs itself.


def kill_after(module: str, function: str) -> str:
    """A hook: the command SIGKILLs itself right after ``module.function`` (e.g. write_card) returns."""
    return f"""
import os, signal
import {module} as target
real = target.{function}
def then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
target.{function} = then_die
"""


# The old output moved aside (renamed to *.old-*), the new one not yet in its place.
KILL_BETWEEN_RENAMES = """
import os, signal
real_replace = os.replace
def replace_then_die(src, dst):
    real_replace(src, dst)
    if ".old-" in os.fspath(dst):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die
"""


# ------------------------------------------------------------------ another class list


def relabel_build(src: Path, out: Path, scc_every: int = 0) -> Path:
    """A copy of the HAM10000 build ``src`` at ``out`` as an ISIC 2019 (8-class) build, which `verify` passes: akiec
    becomes ak, the other codes stay, and with ``scc_every`` every so many nv lesions (in lesion-id order) become scc
    (without it scc has no samples). Each tar sample's .cls and .json are rewritten (the images are the same bytes),
    and with them dataset.json (classes, counts, shard sha256s), manifest.csv and _info.json. Returns ``out``."""
    import json

    from hamdata.inputs.classes import ISIC2019_CLASSES
    from hamdata.store.manifest import CARD_NAME, read_manifest
    from hamdata.store.shards import iter_samples
    from hamdata.store.writer import BuildWriter

    card = json.loads((Path(src) / CARD_NAME).read_text(encoding="utf-8"))
    manifest = read_manifest(src)
    nv_lesions = sorted(set(manifest.loc[manifest["dx"] == "nv", "lesion_id"]))
    to_scc = set(nv_lesions[scc_every - 1::scc_every]) if scc_every else set()
    kin = {key: (collection, group) for key, collection, group in zip(manifest["key"], manifest["collection"],
                                                                       manifest["group"])}
    out = Path(out)
    out.mkdir(parents=True)
    splits = {s["split"]: s["split"] for s in card["shards"]}  # in the card's order
    with BuildWriter(out, ISIC2019_CLASSES, card["config"]["shard_size"], splits, measure=False) as writer:
        for entry in card["shards"]:
            for sample in iter_samples(Path(src) / entry["path"]):
                (ext, image), record = sample.members[0], json.loads(sample.get("json"))
                dx, lesion = record["dx"], record["lesion_id"]
                record["dx"] = "ak" if dx == "akiec" else "scc" if dx == "nv" and lesion in to_scc else dx
                collection, group = kin[sample.key]
                writer.write(sample.key, ext, image, record, collection=collection, group=group)
        shards = list(card.pop("shards"))
        card["classes"] = list(ISIC2019_CLASSES)
        if "classes" in card.get("config", {}):
            card["config"]["classes"] = "isic2019"
        writer.finish(card)
    assert [(s["path"], s["samples"]) for s in card["shards"]] == [(s["path"], s["samples"]) for s in shards]
    return out


# ------------------------------------------------------------------ report pages in a real browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")

# Added to a copy of a page: once loaded, what a reader would see, as JSON in <pre id="page-check">: images that did
# not load, and per section its title, the characters of text below the heading, its images and table cells; and
# header cells with no words.
CHECK_PAGE = """<script>
window.addEventListener("load", function () {
  var all = function (root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); };
  var images = all(document, "img");
  var bad = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; });
  var sections = all(document, "section").map(function (s) {
    var heading = s.querySelector("h2");
    var title = heading ? heading.innerText.trim() : "";
    return {title: title, text: s.innerText.trim().length - title.length, images: all(s, "img").length,
            cells: all(s, "td").length};
  });
  var unnamed = all(document, "th").filter(function (th) { return !/[A-Za-z0-9]/.test(th.innerText); })
    .map(function (th) { var t = th.closest("section"); return t ? t.id : "?"; });
  var out = document.createElement("pre");
  out.id = "page-check";
  out.textContent = JSON.stringify({total: images.length, loaded: images.length - bad.length, bad: bad,
                                    sections: sections, unnamed_columns: unnamed});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("Chromium is not installed (Debian package `chromium`, which .ci/run installs)")


def run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # As root Chromium needs --no-sandbox; the resolver rule makes every network name fail, so an
    # image that needed the network could not load.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=90)


def open_in_chromium(report: Path, tmp: Path, screenshot: bool = True) -> tuple:
    """What headless Chromium made of the page: CHECK_PAGE's result, and a 1280x2000 screenshot as an array."""
    import html
    import json

    import numpy as np
    from PIL import Image

    browser = chromium()
    name = f"{report.parent.parent.name}-{report.parent.name}"
    checked = tmp / f"checked-{name}.html"  # the report plus a script that looks at it
    checked.write_text(report.read_text(encoding="utf-8").replace("</body>", CHECK_PAGE + "</body>"), encoding="utf-8")
    dom = run_chromium(browser, tmp / "profile", "--virtual-time-budget=10000", "--dump-dom", checked.as_uri())
    found = re.search(r'<pre id="page-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"no page check in Chromium's DOM (exit {dom.returncode}): {dom.stderr[-800:]}"
    check = json.loads(html.unescape(found.group(1)))
    if not screenshot:
        return check, None
    shot = tmp / f"{name}.png"
    done = run_chromium(browser, tmp / "profile", f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    assert shot.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-800:]}"
    return check, np.asarray(Image.open(shot).convert("L"), dtype=np.float64)


def assert_looks_right(report: Path, check: dict, pixels=None) -> None:
    """Every image loaded; no section shows only its heading; every table column has a name in words; the
    screenshot, where taken, is neither blank nor one flat colour."""
    page = report.read_text(encoding="utf-8")
    assert check["bad"] == [] and check["loaded"] == check["total"] == len(IMG_SRC.findall(page)) > 0
    empty = [s["title"] for s in check["sections"] if s["text"] <= 0 and not s["images"]]
    assert check["sections"] and not empty, f"{report}: sections with nothing below the heading: {empty}"
    assert check["unnamed_columns"] == [], f"{report}: table columns without a name in {check['unnamed_columns']}"
    if pixels is not None:
        assert pixels.shape == (2000, 1280)
        assert pixels.std() > 20, "the screenshot is (nearly) one flat colour"
        assert (pixels < 235).mean() > 0.05, "the screenshot is (nearly) all white"
