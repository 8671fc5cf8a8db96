"""IJB-C 1:1 and 1:N at the real size through the runner's own code path: peak memory and time.

Writes, under a temporary folder removed afterwards, an IJB-C-sized meta folder in the insightface layout
(469,375 face rows, 23,124 templates of ~20 images on average with a long tail, stills and video frames sharing
media ids; 15,658,489 template pairs; 1:N gallery G1 / G2 and probe lists; sizes from biometric-protocols.md §4.1)
and a 469,375 × 2 × 512 float32 flip-view feature entry written by the feature store's own writer (random unit
vectors around subject centres; no image is decoded). A child process then does what the runner does for the
unit: opens the benchmark with its kind's opener, gathers the IJB inputs from a ``ModelFeatures`` view of the store
and calls the IJB protocol's ``run`` (:func:`overspec.protocols.inputs.compute_unit`). Its peak RSS is the child's own
high-water mark (``VmHWM`` of ``/proc/self/status``), read after each stage (imports, open, gather + run).
``ru_maxrss`` from ``os.wait4`` is not used: Linux carries the parent's resident size at spawn into the child's
``ru_maxrss`` across ``exec``, which added this script's own ~0.9 GiB (the meta arrays it keeps for the 1:N
lists) to every child.
The first child sees the meta folder before its 1:N lists are written (1:1 only), the second after
(1:1 and 1:N in one unit, as the runner computes them). Both children get the same data; the second adds 1:N.

Run: ``.venv/bin/python benchmarks/bench_ijb.py`` (full size: ~2.5 GB of temporary files, writing them takes a few
minutes, each child about a minute on two cores); ``--scale 0.1`` for a quick development run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IJBC_IMAGES, IJBC_TEMPLATES, IJBC_PAIRS, IJBC_GENUINE = 469_375, 23_124, 15_658_489, 19_557
IJBC_G1, IJBC_G2 = 1_772, 1_759
DIM = 512
GOAL_GIB = 2.0
BENCHMARK = "bench-ijbc"


def template_sizes(n_templates: int, n_images: int, rng: np.random.Generator) -> np.ndarray:
    """Images per template summing to ``n_images``: at least one each, log-normal long tail (mean ~20)."""
    weights = rng.lognormal(0.0, 1.3, size=n_templates)
    sizes = 1 + np.floor(weights / weights.sum() * (n_images - n_templates)).astype(np.int64)
    extra = rng.choice(n_templates, size=n_images - int(sizes.sum()), replace=False)
    sizes[extra] += 1
    return sizes


def face_table(n_templates: int, n_images: int, n_subjects: int, rng: np.random.Generator):
    """Template and media id per face row, and each template's subject.

    A template's images are split between stills (one media each) and video frames (a few media of many frames);
    media ids are per subject, so one video can feed several templates of its subject, as in IJB-C.
    """
    subjects = np.concatenate([np.arange(n_subjects), rng.integers(0, n_subjects, n_templates - n_subjects)])
    rng.shuffle(subjects)
    sizes = template_sizes(n_templates, n_images, rng)
    tids = np.repeat(np.arange(1, n_templates + 1), sizes)
    position = np.arange(n_images) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    stills = np.repeat(rng.integers(1, 8, n_templates), sizes)
    videos = np.repeat(rng.integers(1, 4, n_templates), sizes)
    local = np.where(position < stills, position, stills + position % videos)
    pool = np.repeat(rng.integers(0, 40, n_templates), sizes)  # which part of its subject's media it draws on
    mids = np.repeat(subjects, sizes) * 1000 + pool * 20 + local
    return tids, mids, subjects


def write_lines(path: Path, fmt: str, columns: list[np.ndarray], header: str = "", chunk: int = 1 << 20) -> None:
    """Write one ``fmt``-formatted line per row of ``columns`` in chunks (no Python object per file row kept)."""
    with path.open("w") as handle:
        if header:
            handle.write(header + "\n")
        for start in range(0, columns[0].size, chunk):
            block = np.empty((min(chunk, columns[0].size - start), len(columns)), dtype=object)
            for j, column in enumerate(columns):
                block[:, j] = column[start:start + chunk].tolist()
            handle.write((fmt + "\n") * block.shape[0] % tuple(block.ravel()))


def pair_table(subjects: np.ndarray, n_pairs: int, n_genuine: int, left: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_genuine`` same-subject pairs, then impostor pairs from the left templates to random other templates."""
    by_subject = np.argsort(subjects, kind="stable")
    ordered = subjects[by_subject]
    a = rng.integers(0, subjects.size, n_genuine)
    lo, hi = np.searchsorted(ordered, subjects[a]), np.searchsorted(ordered, subjects[a], side="right")
    b = by_subject[lo + (rng.random(n_genuine) * (hi - lo)).astype(np.int64)]
    n_impostor = n_pairs - n_genuine
    c = left[rng.integers(0, left.size, n_impostor)]
    d = rng.integers(0, subjects.size, n_impostor)
    clash = subjects[c] == subjects[d]
    while clash.any():
        d[clash] = rng.integers(0, subjects.size, int(clash.sum()))
        clash = subjects[c] == subjects[d]
    t1, t2 = np.concatenate([a, c]), np.concatenate([b, d])
    labels = (subjects[t1] == subjects[t2]).astype(np.int64)
    return t1 + 1, t2 + 1, labels


def write_meta(root: Path, scale: float, rng: np.random.Generator) -> dict:
    """Write the face list, landmark/score file and pair file; return what the 1:N lists need."""
    n_images, n_templates = round(IJBC_IMAGES * scale), round(IJBC_TEMPLATES * scale)
    n_g1, n_g2 = round(IJBC_G1 * scale), round(IJBC_G2 * scale)
    tids, mids, subjects = face_table(n_templates, n_images, n_g1 + n_g2, rng)
    meta = root / "meta"
    meta.mkdir(parents=True)
    names = np.char.add(np.arange(1, n_images + 1).astype(str), ".jpg")
    write_lines(meta / "ijbc_face_tid_mid.txt", "%s %d %d", [names, tids, mids])
    points = (np.array([38.3, 51.7, 73.5, 51.5, 56.0, 71.7, 41.5, 92.4, 70.7, 92.2]) * 2
              + rng.normal(0, 2, (n_images, 10))).round(3)
    det = rng.uniform(0.1, 1.0, n_images).round(6)
    write_lines(meta / "ijbc_name_5pts_score.txt", "%s" + " %.3f" * 10 + " %.6f",
                [names, *points.T, det])
    gallery_of_subject = np.full(subjects.max() + 1, -1)
    gallery_of_subject[subjects[::-1]] = np.arange(subjects.size)[::-1]  # each subject's first template
    left = gallery_of_subject[gallery_of_subject >= 0]
    t1, t2, labels = pair_table(subjects, round(IJBC_PAIRS * scale), round(IJBC_GENUINE * scale), left, rng)
    write_lines(meta / "ijbc_template_pair_label.txt", "%d %d %d", [t1, t2, labels])
    return {"names": names, "tids": tids, "subjects": subjects, "gallery": left, "g1": n_g1,
            "pairs": int(t1.size), "genuine": int(labels.sum()), "templates": n_templates, "images": n_images}


def write_1n_lists(root: Path, info: dict) -> None:
    """Write G1 / G2 (one template per subject) and the mixed probe list (every other template)."""
    tids, subjects, names = info["tids"], info["subjects"], info["names"]
    gallery = info["gallery"] + 1
    probes = np.setdiff1d(np.arange(1, subjects.size + 1), gallery)
    for stem, templates in (("gallery_G1", gallery[:info["g1"]]), ("gallery_G2", gallery[info["g1"]:]),
                            ("probe_mixed", probes)):
        rows = np.isin(tids, templates)
        write_lines(root / "meta" / f"ijbc_1N_{stem}.csv", "%d,%d,%s",
                    [tids[rows], subjects[tids[rows] - 1], names[rows]], header="TEMPLATE_ID,SUBJECT_ID,FILENAME")


class StoredEncoder:
    """What the feature store asks of a model whose features are already stored: a name and a fingerprint."""

    name = "bench-ijb-model"
    fingerprint = "bench-ijb-random-unit-vectors"


def entry_for(data_root: Path):
    """The benchmark entry a user's YAML file would declare for the meta folder."""
    from overspec.data.biometric.benchmarks import BiometricBenchmark

    return BiometricBenchmark(name=BENCHMARK, kind="ijb", format="ijb", root="IJBC", layout="insightface IJB")


def write_features(data_root: Path, store_root: Path, info: dict, rng: np.random.Generator) -> Path:
    """Write the faces' flip-view features (unit vectors near subject centres, noisier for some templates than for
    others so that TARs are graded) as the store's cache entry."""
    from overspec.data.biometric.benchmarks import open_benchmark
    from overspec.features._files import write_array
    from overspec.features.store import FeatureStore

    opened = open_benchmark(entry_for(data_root), data_root)
    store = FeatureStore(store_root, progress=False)
    key = store.image_key(StoredEncoder(), opened.faces, "flip")
    path = store.root / "image" / key[:2] / f"{key}.npy"
    scratch = store_root / "scratch.npy"
    store_root.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(scratch, "w+", np.float32, (info["images"], 2, DIM))
    centres = rng.standard_normal((info["subjects"].max() + 1, DIM), dtype=np.float32)
    face_subjects = info["subjects"][info["tids"] - 1]
    noise = np.exp(rng.uniform(np.log(3.0), np.log(30.0), info["templates"])).astype(np.float32)[info["tids"] - 1]
    for start in range(0, info["images"], 1 << 15):
        rows = slice(start, start + (1 << 15))
        for view in (0, 1):
            x = centres[face_subjects[rows]]
            x += rng.standard_normal(x.shape, np.float32) * noise[rows, None]
            array[rows, view] = x / np.linalg.norm(x, axis=1, keepdims=True)
    array.flush()
    write_array(path, array, {"model": StoredEncoder.name, "view": "flip"})
    del array
    scratch.unlink()
    return path


def peak_gib() -> float:
    """This process's own peak resident size so far (``VmHWM``, reset by ``exec``), in GiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmHWM"].split()[0]) / 2**20


def child(data_root: Path, store_root: Path) -> None:
    """What the runner does for the IJB unit: open, gather from the store, run the protocol; print the rows and the
    peak resident size after each stage."""
    from overspec.data.biometric.benchmarks import open_benchmark
    from overspec.features.store import FeatureStore, ModelFeatures
    from overspec.protocols.base import Switch
    from overspec.protocols.biometric import IJB
    from overspec.protocols.inputs import compute_unit

    peaks = {"imports": peak_gib()}
    start = time.perf_counter()
    entry = entry_for(data_root)
    opened = open_benchmark(entry, data_root)
    peaks["open"] = peak_gib()
    source = ModelFeatures(FeatureStore(store_root, progress=False), StoredEncoder)
    (plan,) = IJB.units(Switch(), entry.name)
    output = compute_unit(IJB, plan, "ijb", opened, source, Switch(), 0, "cpu")
    peaks["gather + run"] = peak_gib()
    values = {row["metric"]: row["value"] for row in output.rows}
    print(json.dumps({"seconds": time.perf_counter() - start, "values": values, "peaks": peaks}))


def measured_child(data_root: Path, store_root: Path) -> tuple[float, float, dict]:
    """Run :func:`child` in a fresh interpreter; return its own peak RSS (GiB), wall time and printed values."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, __file__, "--child", str(data_root), str(store_root)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    output = process.stdout.read()
    if process.wait():
        raise SystemExit(f"child failed with exit code {process.returncode}")
    result = json.loads(output.decode().strip().splitlines()[-1])
    return max(result["peaks"].values()), time.perf_counter() - started, result


def report(name: str, peak: float, wall: float, result: dict) -> None:
    """Print one child's time, its metric values and the goal line."""
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result["values"].items()
                      if k in ("tar_at_far_1e-06", "tar_at_far_0.0001", "tar_at_far_0.1", "rank1",
                               "tpir_at_fpir_0.01"))
    stages = ", ".join(f"{stage} {gib:.2f}" for stage, gib in result["peaks"].items())
    print(f"{name}: {wall:.1f} s in the child ({result['seconds']:.1f} s open + gather + run); {shown}")
    print(f"{name} peak GiB after each stage: {stages}")
    print(f"goal: IJB-C {name} peak memory: {peak:.2f} GiB < {GOAL_GIB:g} GiB: "
          f"{'met' if peak < GOAL_GIB else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of IJB-C's sizes (0.1 for a quick run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temporary folder")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-ijb-", dir=args.tmp))
    try:
        started = time.perf_counter()
        info = write_meta(work / "data" / "IJBC", args.scale, rng)
        write_features(work / "data", work / "features", info, rng)
        print(f"IJB-C x{args.scale:g}: {info['images']:,} faces, {info['templates']:,} templates, "
              f"{info['pairs']:,} pairs ({info['genuine']:,} genuine), features {info['images']:,} x 2 x {DIM} "
              f"float32; written in {time.perf_counter() - started:.0f} s")
        report("1:1", *measured_child(work / "data", work / "features"))
        write_1n_lists(work / "data" / "IJBC", info)
        report("1:N", *measured_child(work / "data", work / "features"))
        print("(the 1:N child computes 1:1 and 1:N in one unit, as the runner does; its peak bounds 1:N's)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
