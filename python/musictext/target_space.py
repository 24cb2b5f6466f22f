"""The geometry a text embedder is trained in: raw audio targets, or an affine map of them.

Audio targets are unit vectors crowded around their mean direction, so raw cosines hardly
separate clips. A ``TargetSpace`` fitted on a sample of training targets maps them to training
coordinates (``encode``) and a prediction back to the raw space (``decode``):

- ``raw``: identity (no buffers; exactly the model without a space);
- ``standardise``: (x - mean) / std per dimension;
- ``pca``: (x - mean) @ components.T, the top-k principal directions (unit rows);
- ``whiten``: the PCA coordinates divided by their standard deviations (``scale`` [k]).

``decode`` gives a normalised training-space vector the mean norm ``norm`` of the encoded sample
before mapping it back, so the offset ``mean`` keeps its weight against the residual.

For pca/whiten, ``save_basis`` writes the encode map as the reduced-basis file that search reads
(``musictext.search.basis``): search then projects audio vectors into the same space.

Whiten stores unit components plus ``scale`` [k] rather than a projection matrix and its
inverse: one [k, D] matrix instead of two (MERT's D is 76,800).
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musictext import storage

KINDS = ("raw", "standardise", "whiten", "pca")
REDUCING = ("whiten", "pca")  # kinds with a basis of k principal directions
BASIS_FILE = "reduced_basis.npz"  # = musictext.search.basis.BASIS_FILE (a stage above the foundation)
DEFAULT_EPS = 1e-4


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown target space {kind!r}; known: {', '.join(KINDS)}")
    return kind


def resolve_k(kind: str, k: int | None, n: int, dim: int) -> int:
    """The training-space dimension of ``kind`` fitted on an [n, dim] sample."""
    if kind not in REDUCING:
        if k is not None:
            raise ValueError(f"target space {kind!r} keeps all {dim} dimensions; k={k} is only for pca/whiten")
        return dim
    available = min(n, dim)
    if k is None:
        return available
    if k < 1 or k > available:
        raise ValueError(f"{kind}: k={k} components asked, but a sample of n={n} rows of D={dim} "
                         f"dimensions gives 1..{available} (k <= min(n, D))")
    return int(k)


def floored(values: torch.Tensor, eps: float, what: str) -> torch.Tensor:
    """``values`` floored at ``eps`` × their largest, so an all-zero dimension (MuQ's robust block
    on short clips) divides by a small constant instead of zero."""
    top = float(values.max())
    if not top > 0:
        raise ValueError(f"the sample has no variance ({what} are all zero): cannot fit a target space")
    return values.clamp(min=eps * top)


def gram(a: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """a.T @ a in float64, accumulated over row chunks (a float64 copy of a wide sample would not fit)."""
    out = torch.zeros(a.shape[1], a.shape[1], dtype=torch.float64)
    for start in range(0, a.shape[0], chunk):
        part = a[start : start + chunk].double()
        out += part.T @ part
    return out


def principal_axes(centred: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-``k`` principal directions [k, D] (unit rows, float32) and singular values [k] of a
    centred [n, D] sample, from the eigendecomposition of the smaller Gram matrix (D x D, or n x n
    when n < D, e.g. MERT's 76,800-D targets): only Vh is needed, and a full SVD would also build
    the [n, min(n, D)] left factor.
    """
    n, dim = centred.shape
    small = centred if n >= dim else centred.T
    values, vectors = torch.linalg.eigh(gram(small))  # ascending
    values, vectors = values.flip(0)[:k].clamp(min=0), vectors.flip(1)[:, :k]
    singular = values.sqrt()
    if n >= dim:
        return vectors.T.float().contiguous(), singular.float()
    # Right singular vectors from the left ones: v_i = X.T u_i / s_i, in column chunks of X.
    top = float(singular[0])
    rows = torch.cat([(vectors.T @ part.double()) for part in centred.split(4096, dim=1)], dim=1)
    rows /= singular.clamp(min=1e-12 * top)[:, None]
    if float(singular[-1]) < 1e-6 * top:
        # Directions of (near-)zero variance are not defined by the sample (rank <= n - 1):
        # any orthonormal completion will do.
        q, r = torch.linalg.qr(rows.T)
        rows = (q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)).T  # keep each row's sign
    return rows.float().contiguous(), singular.float()


class TargetSpace(nn.Module):
    """Raw targets [B, D] <-> training coordinates [B, k] (see the module docstring)."""

    def __init__(self, kind: str, source_dim: int, k: int | None = None):
        """An unfitted space of the right shapes (zeros), to be filled by ``fit`` or a state dict."""
        super().__init__()
        self.kind = check_kind(kind)
        self.source_dim = int(source_dim)
        if self.kind in REDUCING:
            if k is None:
                raise ValueError(f"a {kind} target space needs k, its number of components")
            self._dim = resolve_k(kind, k, n=self.source_dim, dim=self.source_dim)
        elif k not in (None, self.source_dim):
            raise ValueError(f"target space {kind!r} keeps all {self.source_dim} dimensions, not k={k}")
        else:
            self._dim = self.source_dim
        if self.kind == "raw":
            return
        self.register_buffer("mean", torch.zeros(self.source_dim))
        self.register_buffer("norm", torch.ones(()))
        if self.kind == "standardise":
            self.register_buffer("scale", torch.ones(self.source_dim))
        else:
            self.register_buffer("components", torch.zeros(self._dim, self.source_dim))
        if self.kind == "whiten":
            self.register_buffer("scale", torch.ones(self._dim))

    @property
    def dim(self) -> int:
        """k: the training-space dimension (D for raw and standardise)."""
        return self._dim

    @property
    def reduces(self) -> bool:
        return self.kind in REDUCING

    # -- fitting --------------------------------------------------------------------------------
    @classmethod
    def fit(cls, kind: str, sample: np.ndarray, k: int | None = None, eps: float = DEFAULT_EPS) -> "TargetSpace":
        """Fit ``kind`` on ``sample`` [n, D] of raw training targets.

        ``k``: components kept by pca/whiten (None: all min(n, D)); ``eps``: floor of the
        standard deviations (standardise) or PCA scales (whiten), relative to the largest.
        """
        check_kind(kind)
        x = np.asarray(sample, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"fitting a target space needs an [n >= 2, D] sample, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("the target sample holds NaN or infinite values")
        n, dim = x.shape
        space = cls(kind, dim, resolve_k(kind, k, n, dim))
        if kind == "raw":
            return space
        mean = x.mean(axis=0, dtype=np.float64)
        centred = torch.from_numpy((x - mean).astype(np.float32))
        if not float(centred.abs().max()) > 0:
            raise ValueError(f"the target sample has no variance (all {n} rows equal): cannot fit a {kind} space")
        space.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        if kind == "standardise":
            space.scale.copy_(floored(centred.std(dim=0), eps, "standard deviations"))
        else:
            space._fit_basis(centred, eps)
        with torch.no_grad():
            space.norm.fill_(float(space.encode(torch.from_numpy(x)).norm(dim=-1).mean()))
        return space

    def _fit_basis(self, centred: torch.Tensor, eps: float) -> None:
        components, singular = principal_axes(centred, self.dim)
        self.components.copy_(components)
        if self.kind == "whiten":
            std = singular / max(centred.shape[0] - 1, 1) ** 0.5
            self.scale.copy_(floored(std, eps, "singular values"))

    # -- mapping --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw targets [B, D] -> training coordinates [B, k] (not normalised)."""
        if self.kind == "raw":
            return x
        centred = x - self.mean
        if self.kind == "standardise":
            return centred / self.scale
        z = centred @ self.components.T
        return z / self.scale if self.kind == "whiten" else z

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The linear way back, [B, k] -> [B, D]: inverse(encode(x)) = x up to the dropped components."""
        if self.kind == "raw":
            return z
        if self.kind == "standardise":
            return self.mean + z * self.scale
        if self.kind == "whiten":
            z = z * self.scale
        return self.mean + z @ self.components

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Training-space predictions [B, k] -> raw space [B, D] (not normalised).

        A prediction is a direction (the loss compares unit vectors): it gets the length ``norm``,
        the mean length of encoded training targets, before ``inverse``. Raw: ``z`` unchanged.
        """
        if self.kind == "raw":
            return z
        return self.inverse(F.normalize(z, dim=-1) * self.norm)

    # -- persistence ----------------------------------------------------------------------------
    def describe(self) -> dict:
        """What a model's config.json records to rebuild this space (buffers go with the weights)."""
        return {"kind": self.kind, "k": self.dim, "D": self.source_dim}

    @classmethod
    def from_description(cls, desc: dict) -> "TargetSpace":
        """The unfitted space ``describe`` names (load its buffers with ``load_state_dict``)."""
        try:
            kind, k, dim = desc["kind"], desc["k"], desc["D"]
        except (KeyError, TypeError):
            raise ValueError(f"not a target space description (want kind, k, D): {desc!r}") from None
        return cls(kind, dim, k)

    def basis(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], components [k, D]) float32 with encode(x) = (x - mean) @ components.T."""
        if not self.reduces:
            raise ValueError(f"a {self.kind!r} target space has no reduced basis (only pca/whiten)")
        rows = self.components / self.scale[:, None] if self.kind == "whiten" else self.components
        return (self.mean.detach().float().cpu().numpy(), rows.detach().float().cpu().numpy())

    def save_basis(self, uri: str) -> None:
        """Write ``basis()`` as the reduced-basis file search reads (``numpy.savez``: mean, components)."""
        mean, components = self.basis()
        buf = io.BytesIO()
        np.savez(buf, mean=mean, components=components)
        storage.write_bytes(uri, buf.getvalue())

    def extra_repr(self) -> str:
        return f"kind={self.kind}, k={self.dim}, D={self.source_dim}"
