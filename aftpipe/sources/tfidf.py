"""TF-IDF + truncated SVD: a cheap classical second source for multi-source AFT.

Fitted on the train split only (never on the splits it will be evaluated on), deterministically, so the
same train split always yields the same projection; the fitted vocabulary size and a hash of the
projection are recorded as provenance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from aftpipe.config import TfidfOptions
from aftpipe.errors import AftpipeError, option_hint
from aftpipe.sources.base import FeatureSource


class TfidfSource(FeatureSource):
    """TF-IDF (1-2 grams) + TruncatedSVD, fitted on the train split only; `--tfidf-dim` components."""

    modality = "text"
    name = "tfidf"
    Options = TfidfOptions

    @classmethod
    def store_name(cls, arg: str | None, options: TfidfOptions) -> str:
        return "tfidf"

    def __init__(self, arg: str, options: TfidfOptions) -> None:
        self.dim = options.tfidf_dim
        self.pipeline = None
        self._fingerprint: str | None = None

    def fit(self, train_inputs: Sequence[str]) -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = list(train_inputs)
        if len(texts) < 2:  # min_df=2: a term is kept when two rows share it
            raise AftpipeError(f"tfidf: the train split has {len(texts)} row{'s' * (len(texts) != 1)}, and a term is "
                               "kept only when two rows share it; use a larger train split")
        if len(texts) < self.dim:  # the SVD has at most one component per row
            raise AftpipeError(f"tfidf: the train split has {len(texts)} rows, fewer than the {self.dim} components "
                               f"asked for; use a larger train split or lower {option_hint('tfidf_dim', 'N')}")
        vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=200_000, dtype=np.float32)
        try:
            x = vec.fit_transform(texts)
        except ValueError:  # sklearn's "empty vocabulary" / "no terms remain"
            raise AftpipeError("tfidf: no term appears in two rows of the train split, so there is nothing to fit; "
                               "use a larger train split") from None
        if x.shape[1] <= self.dim:
            raise AftpipeError(f"tfidf: the train split has only {x.shape[1]} terms, fewer than the {self.dim} "
                               "components asked for; use a larger train split")
        svd = TruncatedSVD(self.dim, algorithm="randomized", n_iter=5, random_state=0)
        svd.fit(x)
        self.pipeline = (vec, svd)
        self.n_terms = x.shape[1]
        self._fingerprint = hashlib.sha256(np.ascontiguousarray(svd.components_, dtype=np.float32)).hexdigest()

    def length(self, x: str) -> int:
        return len(x)

    def collate(self, inputs: list[str]) -> list[str]:
        return inputs  # vectorising is the forward pass here

    def forward(self, batch: list[str]) -> torch.Tensor:
        if self.pipeline is None:
            raise RuntimeError("TfidfSource.fit must run before forward")
        vec, svd = self.pipeline
        return torch.from_numpy(svd.transform(vec.transform(batch)).astype(np.float32))

    def spec(self) -> dict[str, Any]:
        return {
            "library": "scikit-learn",
            "model_id": "tfidf",
            "path": None,
            "method": "TfidfVectorizer(sublinear_tf, ngram 1-2, min_df 2) + TruncatedSVD(random_state 0)",
            "fitted_on": "train",
            "dim": self.dim,
            "n_terms": getattr(self, "n_terms", None),
            "projection_sha256": self._fingerprint,
            "forward_dtype": "float32",
            "params": 0,
        }
