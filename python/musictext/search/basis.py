"""A reduced basis: how a space too wide for Milvus (MERT's 76,800-D) is indexed there.

Milvus refuses FLOAT_VECTOR fields over 32,768 dimensions. A family whose stored vectors are
wider is indexed in a linear subspace when its export ships one; the training issue produces it.

The file (the contract for whoever writes it):
- name: ``reduced_basis.npz`` inside the family's exported ``{name}_text_embedder/`` directory
  (e.g. ``checkpoints/mert_text_embedder/reduced_basis.npz``), so the basis travels with the
  text embedder that searches in it;
- written with ``numpy.savez`` and two arrays:
  ``mean`` float32 ``[D]`` (D = the family's stored dimension, 76,800 for MERT) and
  ``components`` float32 ``[k, D]`` (k <= 32,768 rows, e.g. PCA components; orthonormal rows are
  expected but not required);
- a vector ``v`` of the full space projects as ``(v - mean) @ components.T`` -> ``[k]``.

Track vectors are projected this way before they go into Milvus. A query from the text embedder
is projected the same way when the embedder outputs ``D`` dimensions; an embedder trained
directly in the reduced space (output ``k``) is used as is. The collection's ``model_id`` carries
the basis fingerprint (``+pca{k}-{sha256[:8]}``) so a search never mixes two bases.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

from musictext import storage

BASIS_FILE = "reduced_basis.npz"


@dataclass(frozen=True)
class ReducedBasis:
    mean: np.ndarray  # [D] float32
    components: np.ndarray  # [k, D] float32
    fingerprint: str  # first 8 hex digits of the file's sha256
    source: str

    @property
    def source_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def tag(self) -> str:
        """What the collection's model_id gets appended: names the subspace."""
        return f"+pca{self.dim}-{self.fingerprint}"

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """[N, D] or [D] -> [N, k] or [k] float32."""
        v = np.asarray(vectors, dtype=np.float32)
        if v.shape[-1] != self.source_dim:
            raise ValueError(f"{self.source}: basis projects {self.source_dim}-D vectors, got {v.shape[-1]}-D")
        return ((v - self.mean) @ self.components.T).astype(np.float32)


def load_basis(uri: str) -> ReducedBasis:
    """Read and check a basis file (local path or bucket URI)."""
    data = storage.read_bytes(uri)
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        mean, components = npz["mean"], npz["components"]
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"{uri}: not a reduced basis (want an .npz with 'mean' [D] and 'components' [k, D]): "
                         f"{err}") from None
    if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]:
        raise ValueError(f"{uri}: 'mean' {mean.shape} and 'components' {components.shape} do not fit "
                         f"(want [D] and [k, D])")
    if not (np.isfinite(mean).all() and np.isfinite(components).all()):
        raise ValueError(f"{uri}: the basis holds NaN or infinite values")
    return ReducedBasis(mean.astype(np.float32), components.astype(np.float32),
                        hashlib.sha256(data).hexdigest()[:8], uri)


def basis_in_export(export_dir: str) -> str | None:
    """The basis file of an exported ``{name}_text_embedder`` dir, or None when it has none."""
    uri = storage.join(export_dir, BASIS_FILE)
    return uri if storage.exists(uri) else None
