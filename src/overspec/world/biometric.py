"""The embedded biometric world: small face-verification, IJB, MAD and PAD benchmarks rendered from a seed.

:func:`ensure_biometric_world` writes, under one root::

    verification/{lfw,cfp_fp,agedb_30}.bin   insightface pair files (300 pairs each, half genuine, 10 folds of
                                             15 genuine + 15 impostor pairs): LFW-like (moderate pose and light),
                                             CFP-FP-like (frontal vs profile), AgeDB-30-like (large age gap)
    ijbc/meta/, ijbc/loose_crop/             IJB-C-style meta folder (templates, media, landmarks, detector
                                             scores, 1:1 pairs, 1:N galleries G1 / G2 and probes)
    mad/protocol.csv, mad/images/...         MAD: passport-style bona fide + morphs (blend, warp, latent)
    pad/<O|C|I|M>/protocol.csv, pad/<S>/...  PAD: four "source datasets" with their own camera style, print /
                                             replay / mask attacks as 3-frame videos, splits train / dev / test
    fr_train/<identity>/*.png                identity folders for FR fine-tuning (identities disjoint from all
                                             evaluation sets)
    manifest.json, COMPLETE.json             paths and counts; seed, generator version and content hash

Every set draws its own identities, so no evaluation identity appears in ``fr_train``. The folder is built
in a temporary folder beside ``root`` and swapped in whole (:func:`overspec.files.atomic_folder`), and a second call with the same seed is a no-op
while the content hash matches. Sizes keep generation to a few tens of seconds on two cores.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from overspec.data.biometric.attack_list import AttackProtocol, AttackSample, write_protocol
from overspec.data.formats.bin_pairs import write_bin
from overspec.data.formats.ijb import IJBFace, write_ijb_meta
from overspec.files import atomic_folder, remove_stale_temporaries
from overspec.world import attacks as A
from overspec.world import faces as F
from overspec.world import morphs as M
from overspec.world.checks import content_matches
from overspec.world.general import folder_hash
from overspec.errors import InputError

__all__ = ["ensure_biometric_world", "read_manifest", "WorldSizes", "CAMERA_STYLES", "GENERATOR_VERSION", "MARKER",
           "MANIFEST"]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MARKER = "COMPLETE.json"
MANIFEST = "manifest.json"
FOLDS = 10

LFW_LIKE = F.CaptureRanges(yaw=(-0.3, 0.3), roll=(-8.0, 8.0), ambient=(0.5, 0.85), diffuse=(0.15, 0.5),
                           noise=(1.0, 5.0), blur=(0.0, 0.7), gain=0.1, shift=2.5)
#: Capture style of each PAD source (the MCIO letters): sensor noise, blur, colour cast, gamma, framing.
CAMERA_STYLES = {
    "O": A.CameraStyle("O", gain=(1.0, 1.0, 1.0), gamma=1.0, blur=0.0, noise=1.5, background=(200, 200, 205)),
    "C": A.CameraStyle("C", gain=(1.08, 1.0, 0.88), gamma=1.1, blur=0.8, noise=4.0, contrast=0.9,
                       background=(120, 110, 100), scale=0.92),
    "I": A.CameraStyle("I", gain=(0.9, 1.0, 1.1), gamma=0.9, blur=0.4, noise=3.0, background=(60, 70, 85)),
    "M": A.CameraStyle("M", gain=(1.0, 0.97, 1.02), gamma=1.05, blur=0.2, noise=2.5, contrast=1.15,
                       background=(150, 160, 140), scale=1.06),
}
# identity-seed offsets keep every set's people disjoint (identity i of a set = make_identity(base + offset + i))
_OFFSETS = {"fr_train": 0, "lfw": 10_000, "cfp_fp": 20_000, "agedb_30": 30_000, "ijbc": 40_000, "mad": 50_000,
            "pad": 60_000}


@dataclass(frozen=True)
class WorldSizes:
    """How much to generate; the defaults give ~3,600 images (tests use a tiny instance)."""

    pairs: int = 300
    ijb_subjects: int = 48
    mad_subjects: tuple[int, int] = (60, 40)
    mad_morph_pairs: tuple[int, int] = (40, 30)
    pad_subjects: tuple[int, int, int] = (8, 3, 8)
    pad_frames: int = 3
    fr_identities: int = 60
    fr_images: int = 8

    def __post_init__(self) -> None:
        if self.pairs <= 0 or self.pairs % (2 * FOLDS):
            raise InputError(f"pairs must be a positive multiple of {2 * FOLDS} (10 folds, half genuine), "
                             f"got {self.pairs}")
        if self.ijb_subjects < 2 or min(self.mad_subjects) < 2 or min(self.pad_subjects) < 1:
            raise InputError(f"need at least 2 IJB / MAD subjects per split and 1 PAD subject per split: {self}")


def _identities(seed: int, pool: str, n: int, start: int = 0) -> list[F.Identity]:
    base = seed * 1_000_003 + _OFFSETS[pool] + start
    return [F.make_identity(base + i) for i in range(n)]


def _rng(seed: int, part: str) -> np.random.Generator:
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(part.encode()).digest()[:4], "little")])


def _save_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, compress_level=1)


# ---------------------------------------------------------------- verification pairs


def _pair_layout(rng: np.random.Generator, n_people: int, n_pairs: int) -> list[tuple[bool, int, int]]:
    """Pair list in insightface fold order: each fold is a block of genuine then impostor pairs."""
    per_fold = n_pairs // FOLDS
    pairs = []
    for _ in range(FOLDS):
        for k in range(per_fold):
            same = k < per_fold // 2
            a = int(rng.integers(n_people))
            b = a if same else int((a + 1 + rng.integers(n_people - 1)) % n_people)
            pairs.append((same, a, b))
    return pairs


def _verification_images(kind: str, seed: int, n_pairs: int) -> tuple[list[np.ndarray], list[bool]]:
    rng = _rng(seed, kind)
    people = _identities(seed, kind, max(2, 2 * n_pairs // 3))
    images, issame = [], []
    for same, a, b in _pair_layout(rng, len(people), n_pairs):
        if kind == "lfw":
            ca, cb = F.sample_capture(rng, LFW_LIKE), F.sample_capture(rng, LFW_LIKE)
        elif kind == "cfp_fp":
            ca, cb = F.sample_capture(rng, F.FRONTAL), F.sample_capture(rng, F.PROFILE)
        else:
            young = float(rng.uniform(0.0, 0.3))
            old = young + float(rng.uniform(0.5, 0.7)) if same else float(rng.uniform(0.0, 1.0))
            ca, cb = F.sample_capture(rng, F.FRONTAL, age=young), F.sample_capture(rng, F.FRONTAL, age=old)
        images += [F.render_face(people[a], ca).image, F.render_face(people[b], cb).image]
        issame.append(same)
    return images, issame


def _write_verification(root: Path, seed: int, sizes: WorldSizes) -> dict[str, str]:
    paths = {}
    for kind in ("lfw", "cfp_fp", "agedb_30"):
        images, issame = _verification_images(kind, seed, sizes.pairs)
        paths[kind] = write_bin(root / "verification" / f"{kind}.bin", images, issame, fmt="jpg").relative_to(root)
    return {k: v.as_posix() for k, v in paths.items()}


# ---------------------------------------------------------------- IJB


def _ijb_faces(seed: int, n_subjects: int) -> tuple[list[IJBFace], list[tuple[int, int, int]], dict, list]:
    """Two templates per subject (gallery: 1–2 stills; probe: a still and a 3-frame video), loose 128² crops."""
    rng = _rng(seed, "ijbc")
    people = _identities(seed, "ijbc", n_subjects)
    faces: list[IJBFace] = []
    media = 0
    for s, person in enumerate(people):
        gallery, probe = 2 * s + 1, 2 * s + 2
        plans = [(gallery, 1)] * int(rng.integers(1, 3)) + [(probe, 1), (probe, 3)]
        for template, frames in plans:
            media += 1
            base = F.sample_capture(rng, LFW_LIKE, size=128, scale=float(rng.uniform(0.78, 0.95)),
                                    shift=(float(rng.uniform(-8, 8)), float(rng.uniform(-6, 6))))
            for k in range(frames):
                capture = replace(base, yaw=base.yaw + 0.05 * k, roll=base.roll + 1.0 * k,
                                  noise_seed=base.noise_seed + k)
                face = F.render_face(person, capture)
                landmarks = face.landmarks + rng.normal(0.0, 0.7, face.landmarks.shape)
                quality = 1.0 - 0.6 * abs(capture.yaw) - 0.2 * capture.blur
                score = float(np.clip(quality + rng.normal(0.0, 0.05), 0.1, 1.0))
                faces.append(IJBFace(face.image, landmarks, score, template, media, s + 1))
    gallery_ids = [2 * s + 1 for s in range(n_subjects)]
    probe_ids = [2 * s + 2 for s in range(n_subjects)]
    pairs = [(g, p, int(g + 1 == p)) for g in gallery_ids for p in probe_ids]
    half = n_subjects // 2
    galleries = {"G1": gallery_ids[:half], "G2": gallery_ids[half:]}
    return faces, pairs, galleries, probe_ids


def _write_ijb(root: Path, seed: int, sizes: WorldSizes) -> dict[str, object]:
    faces, pairs, galleries, probes = _ijb_faces(seed, sizes.ijb_subjects)
    write_ijb_meta(root / "ijbc", "ijbc", faces, pairs, galleries=galleries, probes=probes)
    return {"root": "ijbc", "prefix": "ijbc", "faces": len(faces), "pairs": len(pairs)}


# ---------------------------------------------------------------- MAD


def _morph(method: str, a: F.Identity, b: F.Identity, rng: np.random.Generator) -> np.ndarray:
    ca, cb = F.sample_capture(rng, F.PASSPORT), F.sample_capture(rng, F.PASSPORT)
    if method == "latent":
        return M.render_latent_morph(a, b, ca).image
    fa, fb = F.render_face(a, ca), F.render_face(b, cb)
    return (M.morph_blend if method == "blend" else M.morph_warp)(fa, fb).image


def _write_mad(root: Path, seed: int, sizes: WorldSizes) -> dict[str, object]:
    folder = root / "mad"
    rng = _rng(seed, "mad")
    people = _identities(seed, "mad", sum(sizes.mad_subjects))
    samples: list[AttackSample] = []
    start = 0
    for split, n, n_morphs in zip(("train", "test"), sizes.mad_subjects, sizes.mad_morph_pairs, strict=True):
        group = people[start:start + n]
        for i, person in enumerate(group):
            for k in range(2):
                rel = f"images/{split}/bona_fide/s{start + i:04d}_{k}.png"
                _save_png(folder / rel, F.render_face(person, F.sample_capture(rng, F.PASSPORT)).image)
                samples.append(AttackSample(rel, "bona_fide", "", rel, f"s{start + i:04d}", split, "world"))
        for j in range(n_morphs):
            a, b = rng.choice(n, size=2, replace=False)
            for method in M.MORPH_METHODS:
                rel = f"images/{split}/{method}/m{j:04d}.png"
                _save_png(folder / rel, _morph(method, group[a], group[b], rng))
                subjects = f"s{start + a:04d}+s{start + b:04d}"
                samples.append(AttackSample(rel, "attack", method, rel, subjects, split, "world"))
        start += n
    write_protocol(folder / "protocol.csv", AttackProtocol("mad", folder, tuple(samples), task="mad"))
    return {"protocol": "mad/protocol.csv", "task": "mad", "images": len(samples)}


# ---------------------------------------------------------------- PAD


def _write_pad_source(folder: Path, key: str, seed: int, sizes: WorldSizes) -> int:
    style = CAMERA_STYLES[key]
    rng = _rng(seed, f"pad-{key}")
    people = _identities(seed, "pad", sum(sizes.pad_subjects), start=1000 * "OCIM".index(key))
    frames = sizes.pad_frames
    samples: list[AttackSample] = []
    start = 0
    for split, n in zip(("train", "dev", "test"), sizes.pad_subjects, strict=True):
        for i, person in enumerate(people[start:start + n]):
            subject = f"{key}{start + i:03d}"
            videos: list[tuple[str, str, Callable[[int], list[np.ndarray]]]] = [
                ("bona_fide", "", lambda s, p=person: A.render_bona_fide_video(p, style, s, frames))]
            videos += [("attack", sp, lambda s, p=person, sp=sp: A.render_attack_video(p, sp, style, s, frames))
                       for sp in A.PAI_SPECIES]
            for label, species, render in videos:
                video_dir = f"{split}/{label}/{species + '/' if species else ''}{subject}_{species or 'live'}"
                for k, frame in enumerate(render(int(rng.integers(2**31)))):
                    rel = f"{video_dir}/frame{k}.png"
                    _save_png(folder / rel, frame)
                    samples.append(AttackSample(rel, label, species, video_dir, subject, split, key))
        start += n
    write_protocol(folder / "protocol.csv", AttackProtocol(key, folder, tuple(samples), task="pad"))
    return len(samples)


def _write_pad(root: Path, seed: int, sizes: WorldSizes) -> dict[str, object]:
    counts = {key: _write_pad_source(root / "pad" / key, key, seed, sizes) for key in CAMERA_STYLES}
    return {"sources": {key: f"pad/{key}/protocol.csv" for key in CAMERA_STYLES}, "task": "pad", "frames": counts}


# ---------------------------------------------------------------- FR training folders


def _write_fr_train(root: Path, seed: int, sizes: WorldSizes) -> dict[str, object]:
    rng = _rng(seed, "fr_train")
    n_identities, per_identity = sizes.fr_identities, sizes.fr_images
    for i, person in enumerate(_identities(seed, "fr_train", n_identities)):
        for k in range(per_identity):
            _save_png(root / "fr_train" / f"id{i:04d}" / f"{k:02d}.png",
                      F.render_face(person, F.sample_capture(rng, LFW_LIKE)).image)
    return {"root": "fr_train", "identities": n_identities, "images": n_identities * per_identity}


# ---------------------------------------------------------------- build, check, read


def _is_complete(root: Path, seed: int, sizes: WorldSizes) -> bool:
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return False
    return (marker.get("seed") == seed and marker.get("version") == GENERATOR_VERSION
            and marker.get("sizes") == _sizes_json(sizes)
            and content_matches(root, marker.get("content_hash"), folder_hash))


def _sizes_json(sizes: WorldSizes) -> dict:
    return json.loads(json.dumps(asdict(sizes)))


def _build(folder: Path, seed: int, sizes: WorldSizes) -> None:
    manifest = {
        "version": GENERATOR_VERSION, "seed": seed, "sizes": _sizes_json(sizes),
        "verification": _write_verification(folder, seed, sizes),
        "ijb": _write_ijb(folder, seed, sizes),
        "mad": _write_mad(folder, seed, sizes),
        "pad": _write_pad(folder, seed, sizes),
        "fr_train": _write_fr_train(folder, seed, sizes),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    marker = {"seed": seed, "version": GENERATOR_VERSION, "sizes": _sizes_json(sizes),
              "content_hash": folder_hash(folder)}
    (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def ensure_biometric_world(root: Path, seed: int = 0, sizes: WorldSizes = WorldSizes()) -> Path:
    """Generate the biometric world into ``root`` unless it is already complete for ``seed``; return ``root``.

    ``root`` is owned by the world: a stale or partial world there is replaced, but a non-empty folder that is
    not a biometric world is refused. ``root / "manifest.json"`` lists the paths (see :func:`read_manifest`).
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if _is_complete(root, seed, sizes):
            return root
        if root.exists() and any(root.iterdir()) and not (root / MARKER).exists() and not (root / MANIFEST).exists():
            raise FileExistsError(f"{root} is not empty and is not a biometric world; choose an empty or new folder")
        remove_stale_temporaries(root.parent, root.name)  # what a killed generator left
        logger.info("generating the biometric world (seed %d) in %s", seed, root)
        with atomic_folder(root) as folder:
            _build(folder, seed, sizes)
    return root


def read_manifest(root: Path) -> dict:
    """Return ``manifest.json`` of a generated world with every path made absolute."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: call ensure_biometric_world({str(root)!r}) first")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    base = Path(root).resolve()
    manifest["verification"] = {k: str(base / v) for k, v in manifest["verification"].items()}
    manifest["ijb"]["root"] = str(base / manifest["ijb"]["root"])
    manifest["mad"]["protocol"] = str(base / manifest["mad"]["protocol"])
    manifest["pad"]["sources"] = {k: str(base / v) for k, v in manifest["pad"]["sources"].items()}
    manifest["fr_train"]["root"] = str(base / manifest["fr_train"]["root"])
    return manifest
