"""IJB-C-scale 1:1 benchmark of the streaming template-pair scorer (synthetic data, no files).

Default scale follows IJB-C 1:1: ~23k templates, ~15.6M pairs (~19.5k genuine), 512-d embeddings. Image
embeddings (and their flips) are drawn around subject centres with a per-template noise level (so TARs are graded), pooled N1D1F1 into templates, every pair is scored
in chunks from a lazily generated pair list, and TAR at FAR 1e-6 ... 1e-1 is computed with both selection rules.
Prints wall time and peak memory (tracemalloc for Python/numpy allocations, ru_maxrss for the process).

Run: ``.venv/bin/python benchmarks/bench_ijb.py`` (add ``--pairs 2000000`` for a quick run).
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from collections.abc import Iterator

import numpy as np

from overspec.protocols.ijb import (
    IJB_FARS,
    image_features,
    pool_templates,
    score_pair_chunks,
    score_template_pairs,
    tar_at_fars,
)


def synthetic_images(
    n_templates: int, n_subjects: int, images_per_template: int, dim: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return emb, emb_flip, detector scores, template ids, media ids (float32 / int arrays) and template subjects."""
    subjects = rng.integers(0, n_subjects, size=n_templates)
    centres = rng.standard_normal((n_subjects, dim), dtype=np.float32)
    tids = np.repeat(np.arange(n_templates), images_per_template)
    mids = tids * 4 + rng.integers(0, 2, size=tids.size)  # some media hold two frames
    quality = np.exp(rng.uniform(np.log(1.0), np.log(6.0), size=n_templates)).astype(np.float32)  # noise sd
    emb = centres[subjects[tids]]
    emb += rng.standard_normal(emb.shape, dtype=np.float32) * quality[tids, None]
    flip = emb + rng.standard_normal(emb.shape, dtype=np.float32) * 0.1
    det = rng.uniform(0.1, 1.0, size=tids.size).astype(np.float32)
    return emb, flip, det, tids, mids, subjects


def pair_chunks(
    subjects: np.ndarray, n_pairs: int, n_genuine: int, chunk_size: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (t1, t2, label) chunks: first ~``n_genuine`` same-subject pairs, then uniformly random pairs."""
    rng = np.random.default_rng(seed)
    by_subject = np.argsort(subjects, kind="stable")
    sorted_subjects = subjects[by_subject]
    produced = 0
    while produced < n_pairs:
        size = min(chunk_size, n_pairs - produced)
        if produced < n_genuine:
            size = min(size, n_genuine - produced)
            t1 = rng.integers(0, subjects.size, size=size)
            first = np.searchsorted(sorted_subjects, subjects[t1], side="left")
            last = np.searchsorted(sorted_subjects, subjects[t1], side="right")
            t2 = by_subject[first + (rng.random(size) * (last - first)).astype(np.int64)]
        else:
            t1, t2 = rng.integers(0, subjects.size, size=size), rng.integers(0, subjects.size, size=size)
        yield t1, t2, (subjects[t1] == subjects[t2]).astype(np.int8)
        produced += size


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--templates", type=int, default=23_124)
    parser.add_argument("--subjects", type=int, default=3_531)
    parser.add_argument("--images-per-template", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=15_658_489)
    parser.add_argument("--genuine", type=int, default=19_557)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=1 << 15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tracemalloc.start()
    rng = np.random.default_rng(args.seed)
    emb, flip, det, tids, mids, subjects = synthetic_images(
        args.templates, args.subjects, args.images_per_template, args.dim, rng)
    print(f"images {emb.shape[0]:,} x {args.dim} (+ flips), templates {args.templates:,}, pairs {args.pairs:,}, "
          f"chunk {args.chunk_size:,}")

    start = time.perf_counter()
    templates = pool_templates(image_features(emb, flip, det), tids, mids)
    print(f"pooling:  {time.perf_counter() - start:7.1f} s   traced peak {_mib(tracemalloc.get_traced_memory()[1])}"
          " (includes the image embeddings)")
    del emb, flip, det, tids, mids
    tracemalloc.reset_peak()

    start = time.perf_counter()
    scores = np.empty(args.pairs, dtype=np.float32)
    labels = np.empty(args.pairs, dtype=np.int8)
    position = 0
    for t1, t2, label in pair_chunks(subjects, args.pairs, args.genuine, args.chunk_size, args.seed + 1):
        (chunk_scores,) = score_pair_chunks(templates, [(t1, t2)])
        scores[position:position + label.size] = chunk_scores
        labels[position:position + label.size] = label
        position += label.size
    print(f"scoring, lazy pair chunks (gather): {time.perf_counter() - start:6.1f} s   traced peak "
          f"{_mib(tracemalloc.get_traced_memory()[1])} (templates {_mib(templates.features.nbytes)}, "
          f"scores+labels {_mib(scores.nbytes + labels.nbytes)})")
    tracemalloc.reset_peak()

    pair_ids = [np.concatenate(part) for part in zip(*(
        (t1, t2) for t1, t2, _ in pair_chunks(subjects, args.pairs, args.genuine, args.chunk_size, args.seed + 1)))]
    tracemalloc.reset_peak()
    start = time.perf_counter()
    in_memory = score_template_pairs(templates, *pair_ids)
    print(f"scoring, pair list in memory (auto): {time.perf_counter() - start:5.1f} s   traced peak "
          f"{_mib(tracemalloc.get_traced_memory()[1])} (pair ids {_mib(sum(p.nbytes for p in pair_ids))}); "
          f"max |difference| {np.abs(in_memory - scores).max():.1e}")
    del pair_ids, in_memory
    tracemalloc.reset_peak()

    start = time.perf_counter()
    result = tar_at_fars(scores, labels, IJB_FARS, ("nearest", "at_most"))
    print(f"TAR@FAR:  {time.perf_counter() - start:7.1f} s   traced peak {_mib(tracemalloc.get_traced_memory()[1])}")
    tracemalloc.stop()
    print(f"genuine {int(labels.sum()):,}, impostor {int((labels == 0).sum()):,}; "
          f"process max RSS {_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}")
    for rule, values in result["tar_at_far"].items():
        print(f"  {rule:8s} " + "  ".join(f"{far:.0e}: {tar:.4f}" for far, tar in values.items()))


if __name__ == "__main__":
    main()
