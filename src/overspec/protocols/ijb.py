"""IJB-B / IJB-C 1:1 verification and 1:N identification on template features (insightface "N1D1F1").

Per image: ``feat = e + e_flip`` (flip test, features added, not normalised: the norm acts as a quality weight),
times the detector faceness score. Per template: features sharing a media id are averaged, the media features are
summed, the result is L2-normalised. A pair's score is the cosine of its two templates, computed in chunks of
pairs or blocks of first templates, never materialising per-pair features (memory O(templates × dim + chunk) plus
the pair ids and scores). References: insightface ``recognition/arcface_torch/eval_ijbc.py``
(1:1) and ``recognition/_evaluation_/ijb/ijb_evals.py`` (1:N, PR #1739); biometric-protocols.md §4.3–§4.4.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from overspec import metrics
from overspec.data.formats.ijb import IJBMeta
from overspec.errors import InputError
from overspec.features import row_blocks

__all__ = [
    "IJB_FARS",
    "TemplateFeatures",
    "image_features",
    "pool_templates",
    "pool_template_blocks",
    "image_feature_blocks",
    "score_template_pairs",
    "score_pair_chunks",
    "tar_at_fars",
    "evaluate_ijb",
    "evaluate_ijb_verification",
    "verify_template_pairs",
    "evaluate_ijb_identification",
]

logger = logging.getLogger(__name__)

#: The 1:1 operating points insightface reports.
IJB_FARS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass(frozen=True)
class TemplateFeatures:
    """Unit-norm template features, one row per template id (``ids`` sorted ascending)."""

    ids: np.ndarray
    features: np.ndarray

    def rows(self, template_ids: np.ndarray) -> np.ndarray:
        """Return the feature rows of ``template_ids`` (int32, looked up in chunks so no int64 copy of a 15.6M-pair
        list is made); an unknown id is an error naming it."""
        template_ids = np.asarray(template_ids)
        rows = np.empty(template_ids.shape, dtype=np.int32 if self.ids.size < 2**31 else np.int64)
        for start in range(0, template_ids.size, _LOOKUP_CHUNK):
            chunk = template_ids[start:start + _LOOKUP_CHUNK]
            position = np.minimum(np.searchsorted(self.ids, chunk), self.ids.size - 1)
            unknown = self.ids[position] != chunk
            if unknown.any():
                raise KeyError(f"unknown template id {int(chunk[np.flatnonzero(unknown)[0]])}")
            rows[start:start + _LOOKUP_CHUNK] = position
        return rows


#: Template ids looked up per step by :meth:`TemplateFeatures.rows`.
_LOOKUP_CHUNK = 1 << 20


def image_features(
    emb: np.ndarray, emb_flip: np.ndarray | None, det_scores: np.ndarray | None, *, normalise: bool = False
) -> np.ndarray:
    """Return per-image features: ``emb + emb_flip`` (flip test, the "F1" of N1D1F1; insightface adds the two
    passes), optionally L2-normalised ("N0"; default N1 keeps the norm), times ``det_scores`` ("D1").

    Pass ``emb_flip=None`` for no flip test and ``det_scores=None`` for unweighted images.
    """
    feats = np.asarray(emb, dtype=np.float32).copy()
    if emb_flip is not None:
        flip = np.asarray(emb_flip, dtype=np.float32)
        if flip.shape != feats.shape:
            raise InputError(f"emb_flip shape {flip.shape} differs from emb shape {feats.shape}")
        feats += flip
    if normalise:
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), np.finfo(np.float32).tiny)
    if det_scores is not None:
        scores = np.asarray(det_scores, dtype=np.float32)
        if scores.shape != (feats.shape[0],):
            raise InputError(f"det_scores must have shape ({feats.shape[0]},), got {scores.shape}")
        feats *= scores[:, None]
    return feats


def pool_templates(features: np.ndarray, template_ids: np.ndarray, media_ids: np.ndarray) -> TemplateFeatures:
    """Average image features within each (template, media) group, sum the groups per template, L2-normalise."""
    features = np.asarray(features, dtype=np.float32)
    if features.shape[0] != np.shape(template_ids)[0]:
        raise InputError(f"{features.shape[0]} features but {np.shape(template_ids)[0]} template ids")
    return pool_template_blocks([features], template_ids, media_ids)


def pool_template_blocks(
    blocks: Iterable[np.ndarray], template_ids: np.ndarray, media_ids: np.ndarray
) -> TemplateFeatures:
    """:func:`pool_templates` on per-image features arriving as consecutive row blocks (face rows in order).

    A media group's mean summed over the template's groups is ``sum(f_i / n_media(i))``, so each block is added
    to float64 template sums weighted by its faces' media-group sizes: memory is the templates plus one block,
    whatever the number of faces, and the values are the pooled ones rounded once to float32.
    """
    template_ids, media_ids = np.asarray(template_ids), np.asarray(media_ids)
    if template_ids.shape != media_ids.shape or template_ids.ndim != 1:
        raise InputError(f"{template_ids.shape[0]} template ids but {media_ids.shape[0]} media ids")
    if template_ids.size == 0:
        raise InputError("no image features to pool")
    ids, face_template = np.unique(template_ids, return_inverse=True)
    weights = 1.0 / _media_sizes(face_template, media_ids)
    sums: np.ndarray | None = None
    start = 0
    for block in blocks:
        stop = start + block.shape[0]
        if stop > template_ids.size:
            raise InputError(f"more image features than the {template_ids.size} faces of the template list")
        if sums is None:
            sums = np.zeros((ids.size, block.shape[1]), dtype=np.float64)
        _add_block(sums, block, face_template[start:stop], weights[start:stop])
        start = stop
    if start != template_ids.size or sums is None:
        raise InputError(f"{start} image features but {template_ids.size} template and media ids")
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), np.finfo(np.float32).tiny)
    return TemplateFeatures(ids, sums.astype(np.float32))


def _media_sizes(face_template: np.ndarray, media_ids: np.ndarray) -> np.ndarray:
    """The number of faces in each face's (template, media) group."""
    order = np.lexsort((media_ids, face_template))
    t, m = face_template[order], media_ids[order]
    starts = np.flatnonzero(np.r_[True, (t[1:] != t[:-1]) | (m[1:] != m[:-1])])
    counts = np.diff(np.r_[starts, order.size])
    sizes = np.empty(order.size, dtype=np.int64)
    sizes[order] = np.repeat(counts, counts)
    return sizes


def _add_block(sums: np.ndarray, block: np.ndarray, rows: np.ndarray, weights: np.ndarray) -> None:
    """Add each face's weighted feature of ``block`` to its template's row of ``sums``."""
    if rows.size == 0:
        return
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    weighted = block[order].astype(np.float64) * weights[order, None]
    sums[ordered[starts]] += np.add.reduceat(weighted, starts, axis=0)


#: Face rows read from the feature store per step of the streamed pooling.
_FACE_BLOCK_ROWS = 1 << 13


def image_feature_blocks(
    features: np.ndarray, rows: np.ndarray, det_scores: np.ndarray | None, *, normalise: bool = False
) -> Iterator[np.ndarray]:
    """Yield :func:`image_features` of the faces at ``rows`` (ascending) of stored features, block by block.

    ``features`` is ``(N, 2, D)`` (image and mirrored image, the flip view) or ``(N, D)``; a memory-mapped store
    entry is read a block at a time (:func:`overspec.features._files.row_blocks`), never whole.
    """
    rows = np.asarray(rows)
    if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= features.shape[0]):
        raise InputError(f"face rows must be ascending and within the {features.shape[0]} stored rows")
    for start, block in row_blocks(features, _FACE_BLOCK_ROWS):
        lo, hi = np.searchsorted(rows, [start, start + block.shape[0]])
        picked = block[rows[lo:hi] - start]
        emb, flip = (picked[:, 0], picked[:, 1]) if picked.ndim == 3 else (picked, None)
        yield image_features(emb, flip, None if det_scores is None else det_scores[lo:hi], normalise=normalise)


def score_pair_chunks(
    templates: TemplateFeatures, chunks: Iterable[tuple[np.ndarray, np.ndarray]]
) -> Iterator[np.ndarray]:
    """Yield the cosine scores of each ``(template_ids_1, template_ids_2)`` chunk (for pair lists made lazily)."""
    for t1, t2 in chunks:
        yield _cosines(templates, t1, t2)


def _cosines(templates: TemplateFeatures, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """Row-wise dot products of the (unit-norm) features of two equal-length template id arrays."""
    feats = templates.features
    return np.einsum("ij,ij->i", feats[templates.rows(t1)], feats[templates.rows(t2)])


def score_template_pairs(
    templates: TemplateFeatures,
    t1: np.ndarray,
    t2: np.ndarray,
    *,
    chunk_size: int = 1 << 15,
    method: str = "auto",
) -> np.ndarray:
    """Return the cosine score of every template pair ``(t1[k], t2[k])`` without materialising pair features.

    ``"gather"`` gathers both feature rows of ``chunk_size`` pairs at a time; ``"blocks"`` sorts pairs by their
    first template and scores blocks of distinct first templates against all templates with one matrix product
    (``_BLOCK_ROWS`` × templates scores at a time). ``"auto"`` takes blocks when their multiply-adds are at most
    ``_BLOCKS_ADVANTAGE`` times the gather path's (a BLAS product is that much faster per multiply-add than a
    memory-bound gather), as for IJB pair lists, whose first templates repeat.
    """
    t1, t2 = np.asarray(t1), np.asarray(t2)
    if t1.shape != t2.shape or t1.ndim != 1:
        raise InputError(f"t1 and t2 must be equal-length 1-d arrays, got {t1.shape} and {t2.shape}")
    if method not in ("auto", "gather", "blocks"):
        raise InputError(f"method must be 'auto', 'gather' or 'blocks', got {method!r}")
    if t1.size == 0:
        return np.empty(0, dtype=np.float32)
    rows1, rows2 = templates.rows(t1), templates.rows(t2)
    if method == "auto":
        distinct_first = np.count_nonzero(np.bincount(rows1, minlength=templates.ids.size))
        method = "blocks" if distinct_first * templates.ids.size <= _BLOCKS_ADVANTAGE * t1.size else "gather"
    if method == "blocks":
        return _scores_by_row_blocks(templates.features, rows1, rows2)
    scores = np.empty(t1.size, dtype=np.float32)
    feats = templates.features
    for start in range(0, t1.size, chunk_size):
        stop = start + chunk_size
        scores[start:stop] = np.einsum("ij,ij->i", feats[rows1[start:stop]], feats[rows2[start:stop]])
    return scores


#: Distinct first templates scored per matrix product in the "blocks" path.
_BLOCK_ROWS = 512
#: Measured on 2 CPU cores with 23k × 512 templates: a float32 matrix product ran 50-100 times more
#: multiply-adds per second than the gathered row-wise dot products; 48 keeps a margin.
_BLOCKS_ADVANTAGE = 48


def _scores_by_row_blocks(feats: np.ndarray, rows1: np.ndarray, rows2: np.ndarray) -> np.ndarray:
    """Score pairs grouped by first row: ``feats[block] @ feats.T`` per block of distinct first rows."""
    counts = np.bincount(rows1, minlength=feats.shape[0])
    order = _grouped_order(rows1, counts)
    distinct = np.flatnonzero(counts)
    bounds = np.append(0, np.cumsum(counts[distinct]))
    scores = np.empty(rows1.size, dtype=np.float32)
    for first in range(0, distinct.size, _BLOCK_ROWS):
        block = distinct[first:first + _BLOCK_ROWS]
        similarity = feats[block] @ feats.T
        pairs = order[bounds[first]:bounds[first + block.size]]
        scores[pairs] = similarity[np.searchsorted(block, rows1[pairs]), rows2[pairs]]
    return scores


#: Pairs placed per step by :func:`_grouped_order`.
_ORDER_CHUNK = 1 << 20


def _grouped_order(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``np.argsort(rows, kind="stable")`` as int32 (``counts`` = ``np.bincount(rows)``), by a counting sort placed a
    chunk at a time, so no int64 index array of all pairs is made."""
    order = np.empty(rows.size, dtype=np.int32 if rows.size < 2**31 else np.int64)
    free = np.cumsum(counts) - counts  # next free slot of each row's group
    for start in range(0, rows.size, _ORDER_CHUNK):
        chunk = rows[start:start + _ORDER_CHUNK]
        local = np.argsort(chunk, kind="stable")
        ordered = chunk[local]
        group_start = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sizes = np.diff(np.append(group_start, ordered.size))
        rank = np.arange(ordered.size) - np.repeat(group_start, sizes)
        order[free[ordered] + rank] = start + local
        free[ordered[group_start]] += sizes
    return order


def tar_at_fars(
    scores: np.ndarray, labels: np.ndarray, fars: Sequence[float], rules: Sequence[str]
) -> dict[str, dict]:
    """Return TAR, realised FAR and threshold per ``{rule: {far: value}}`` from pair scores and 0/1 labels.

    Uses :func:`overspec.metrics.tar_at_far` (one sweep per rule); ``unreachable_fars`` lists targets below
    1 / number of impostor pairs.
    """
    labels = np.asarray(labels).astype(bool)
    genuine, impostor = scores[labels], scores[~labels]
    points = {rule: metrics.tar_at_far(genuine, impostor, list(fars), rule=rule) for rule in rules}
    reachable = next(iter(points.values())).reachable if points else np.ones(len(fars), bool)
    return {
        "tar_at_far": {rule: _by_target(fars, p.value) for rule, p in points.items()},
        "achieved_far": {rule: _by_target(fars, p.achieved) for rule, p in points.items()},
        "threshold": {rule: _by_target(fars, p.threshold) for rule, p in points.items()},
        "unreachable_fars": [far for far, ok in zip(fars, reachable, strict=True) if not ok],
    }


def _by_target(targets: Sequence[float], values: np.ndarray) -> dict:
    """Return ``{target: float(value)}`` for parallel sequences."""
    return dict(zip(targets, (float(v) for v in np.atleast_1d(values)), strict=True))


def evaluate_ijb_verification(
    emb: np.ndarray,
    emb_flip: np.ndarray | None,
    det_scores: np.ndarray | None,
    template_ids: np.ndarray,
    media_ids: np.ndarray,
    pair_t1: np.ndarray,
    pair_t2: np.ndarray,
    pair_labels: np.ndarray,
    *,
    fars: Sequence[float] = IJB_FARS,
    rules: Sequence[str] = ("nearest", "at_most"),
    chunk_size: int = 1 << 15,
) -> dict:
    """IJB 1:1: pool N1D1F1 templates, score every pair in chunks, report TAR at each FAR under each rule.

    ``nearest`` is insightface's rule (reported in papers); ``at_most`` never exceeds the target FAR.
    """
    templates = pool_templates(image_features(emb, emb_flip, det_scores), template_ids, media_ids)
    return verify_template_pairs(templates, pair_t1, pair_t2, pair_labels, fars=fars, rules=rules,
                                 chunk_size=chunk_size)


def verify_template_pairs(
    templates: TemplateFeatures,
    pair_t1: np.ndarray,
    pair_t2: np.ndarray,
    pair_labels: np.ndarray,
    *,
    fars: Sequence[float] = IJB_FARS,
    rules: Sequence[str] = ("nearest", "at_most"),
    chunk_size: int = 1 << 15,
) -> dict:
    """Score template pairs in chunks and return counts plus TAR at each FAR under each rule."""
    scores = score_template_pairs(templates, pair_t1, pair_t2, chunk_size=chunk_size)
    labels = np.asarray(pair_labels).astype(bool)
    logger.info("IJB 1:1: %d templates, %d genuine and %d impostor pairs",
                templates.ids.size, int(labels.sum()), int((~labels).sum()))
    return {
        "num_templates": int(templates.ids.size),
        "num_genuine": int(labels.sum()),
        "num_impostor": int((~labels).sum()),
        **tar_at_fars(scores, labels, fars, rules),
    }


def evaluate_ijb_identification(
    templates: TemplateFeatures,
    galleries: Mapping[str, tuple[np.ndarray, np.ndarray]],
    probes: tuple[np.ndarray, np.ndarray],
    *,
    fpirs: Sequence[float] = (0.01, 0.1),
    ranks: Sequence[int] = (1, 5, 10),
) -> dict:
    """IJB 1:N open set, each gallery on its own (insightface ``ijb_evals.py``).

    ``galleries`` maps a name (G1, G2) to ``(template_ids, subject_ids)``; ``probes`` is ``(template_ids,
    subject_ids)``. Per gallery, probes whose subject is enrolled are mated, the others non-mated. Reported:
    TPIR at each FPIR averaged over galleries, and rank-k = hits over all galleries / mated probes over all galleries.
    """
    probe_ids, probe_subjects = (np.asarray(a) for a in probes)
    probe_feats = templates.features[templates.rows(probe_ids)]
    per_gallery = {name: _gallery_result(templates, probe_feats, probe_subjects, *gallery, fpirs, ranks)
                   for name, gallery in galleries.items()}
    mated_total = sum(r["num_mated"] for r in per_gallery.values())
    return {
        "tpir_at_fpir": {f: float(np.mean([r["tpir_at_fpir"][f] for r in per_gallery.values()])) for f in fpirs},
        "rank": {k: sum(r["rank"][k] * r["num_mated"] for r in per_gallery.values()) / mated_total for k in ranks},
        "per_gallery": per_gallery,
    }


def _gallery_result(
    templates: TemplateFeatures,
    probe_feats: np.ndarray,
    probe_subjects: np.ndarray,
    gallery_ids: np.ndarray,
    gallery_subjects: np.ndarray,
    fpirs: Sequence[float],
    ranks: Sequence[int],
) -> dict:
    """Score probes against one gallery and return its TPIR@FPIR, rank-k rates and mated counts."""
    gallery_feats = templates.features[templates.rows(np.asarray(gallery_ids))]
    similarity = probe_feats @ gallery_feats.T
    num_mated = int(np.isin(probe_subjects, gallery_subjects).sum())
    tpir = metrics.tpir_at_fpir(similarity, probe_subjects, gallery_subjects, list(fpirs))
    rates = metrics.rank_k(similarity, probe_subjects, gallery_subjects, list(ranks))
    return {
        "num_mated": num_mated,
        "num_nonmated": int(probe_subjects.size - num_mated),
        "tpir_at_fpir": _by_target(fpirs, tpir.tpir),
        "fpir_achieved": _by_target(fpirs, tpir.fpir),
        "rank": _by_target(ranks, rates),
    }


def evaluate_ijb(meta: IJBMeta, features: np.ndarray, rows: np.ndarray | None = None, **options: object) -> dict:
    """Run 1:1 (and 1:N when the meta folder has gallery and probe lists) on stored per-face features.

    ``features`` is ``(N, 2, D)`` (flip view) or ``(N, D)``, possibly memory-mapped; face ``k`` of ``meta`` is
    row ``rows[k]`` (default: row ``k``). Templates are pooled from it block by block. ``options`` (``fars``,
    ``rules``, ``chunk_size``) go to :func:`verify_template_pairs`.
    """
    rows = np.arange(meta.num_faces) if rows is None else np.asarray(rows)
    if rows.shape != (meta.num_faces,):
        raise InputError(f"{rows.size} feature rows for the {meta.num_faces} faces of {meta.root}")
    templates = pool_template_blocks(image_feature_blocks(features, rows, meta.scores), meta.template_ids,
                                     meta.media_ids)
    result = {"verification": verify_template_pairs(templates, meta.pair_t1, meta.pair_t2, meta.pair_labels,
                                                    **options)}
    if meta.galleries and meta.probes:
        galleries = {name: (g.template_ids, g.subject_ids) for name, g in meta.galleries.items()}
        result["identification"] = {
            name: evaluate_ijb_identification(templates, galleries, (p.template_ids, p.subject_ids))
            for name, p in meta.probes.items()
        }
    return result
