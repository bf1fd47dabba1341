"""How much does the linear probe's L2 strength matter? scikit-learn logistic regression on cached features.

    python benchmarks/probe_regularisation.py --store cache/ag_news/minilm --dataset ag_news --test-split test

Fits on the whole train split and scores the test split for a grid of C (inverse L2 strength), on
standardised and on L2-normalised features. A reference for `fit_linear_head`, whose default is C=1 on
standardised features; the probe is both the reported reference and the kd_logit/tokt teacher.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import aftpipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--test-split", required=True)
    args = ap.parse_args()
    ds, st = aftpipe.load_dataset(args.dataset), aftpipe.open_features(args.store)
    tr, te = st.split(args.train_split), st.split(args.test_split)
    x_tr, x_te = tr.read(np.arange(len(tr))), te.read(np.arange(len(te)))
    y_tr, y_te = ds.split(args.train_split).labels[tr.index], ds.split(args.test_split).labels[te.index]
    sc = StandardScaler().fit(x_tr)
    l2 = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    views = {"standardised": (sc.transform(x_tr), sc.transform(x_te)), "l2-normalised": (l2(x_tr), l2(x_te))}
    print("| features | " + " | ".join(f"C={c:g}" for c in (0.01, 0.1, 1, 10, 100)) + " |")
    print("|---|" + "---|" * 5)
    for name, (a, b) in views.items():
        accs = [LogisticRegression(C=c, max_iter=3000).fit(a, y_tr).score(b, y_te) for c in (0.01, 0.1, 1, 10, 100)]
        print(f"| {name} | " + " | ".join(f"{100 * s:.2f}" for s in accs) + " |")


if __name__ == "__main__":
    main()
