"""Biometric metrics: ROC / DET / AUC, EER variants, operating points, HTER, ISO/IEC 30107-3, 1:1 and 1:N.

One score convention everywhere: higher = more genuine / bona fide, a sample is accepted iff score >= threshold
(bob.measure). Only ``verification_kfold`` takes embeddings and follows insightface's distance rule. Inputs are
validated once at the boundary (NaN / inf and empty score sets are rejected with the argument named). Where the
field's code bases disagree (EER, TAR@FAR selection, HTER threshold source) the variant is a named argument and
every result says which one it is; see ``/work/shared/reference/biometric-protocols.md`` §5-§6.
"""

from overspec.metrics._eer import EER_METHODS, EERResult, eer
from overspec.metrics._identification import TPIRResult, rank_k, tpir_at_fpir
from overspec.metrics._operating import (
    OperatingPoint,
    apcer_at_bpcer,
    bpcer_at_apcer,
    far_threshold,
    frr_threshold,
    tar_at_far,
)
from overspec.metrics._pad import (
    HTERResult,
    ISO30107Result,
    d_eer,
    hter,
    hter_at_test_eer,
    iso30107,
    iso30107_threshold,
)
from overspec.metrics._roc import Curve, auc, d_prime, det, far_frr, ppndf, roc, rocch
from overspec.metrics._verification import VerificationResult, verification_kfold

__all__ = [
    "EER_METHODS",
    "Curve",
    "EERResult",
    "HTERResult",
    "ISO30107Result",
    "OperatingPoint",
    "TPIRResult",
    "VerificationResult",
    "apcer_at_bpcer",
    "auc",
    "bpcer_at_apcer",
    "d_eer",
    "d_prime",
    "det",
    "eer",
    "far_frr",
    "far_threshold",
    "frr_threshold",
    "hter",
    "hter_at_test_eer",
    "iso30107",
    "iso30107_threshold",
    "ppndf",
    "rank_k",
    "roc",
    "rocch",
    "tar_at_far",
    "tpir_at_fpir",
    "verification_kfold",
]
