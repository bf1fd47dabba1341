"""Augmented views of a text dataset's train split, as an unlabeled transfer set with their own features.

Cached features belong to one view of an example, so augmentation has to happen before extraction:
`views=K` appends K − 1 augmented copies of every train example to the train split, and `aftpipe extract`
then caches the foundation model's features of each copy like any other row. The copies are *unlabeled*
(label −1): a word-level edit can change the answer ("not good" → "good"), so the label of the original
is not trusted for them; what a method learns from a copy comes from its cached features alone: AFT's
and KD's regularisers, and kd_logit/tokt's teacher predictions on them (Tang et al. 2019, "Distilling
Task-Specific Knowledge from BERT into Simple Neural Networks", distil a BiLSTM on exactly such copies).
Methods that use no unlabeled rows (`none`, the probe) train on the originals only, as without views.

The augmentation is seeded by (view, example index): the same K gives the same rows on every machine, so
the dataset's fingerprint, and with it the store check, is stable. Copies of hold-out examples are
dropped from training (`Split.origin` says whose copy a row is) so the hold-out stays unseen.
"""

from __future__ import annotations

import numpy as np

from aftpipe.data.base import Dataset, Split
from aftpipe.errors import AftpipeError, option_name

SPAN_PROB = 0.5  # chance a copy keeps only a contiguous span of the words
SPAN_MIN = 0.5  # ... of at least this fraction of them
DROP_PROB = 0.15  # then each remaining word is dropped with this chance


def augment_text(text: str, rng: np.random.Generator) -> str:
    """One seeded word-level view: maybe crop to a random span (≥ half the words), then drop words at
    random, never all of them. Word-level so the view stays readable to any tokenizer."""
    words = text.split()
    if len(words) > 4 and rng.random() < SPAN_PROB:
        n = int(len(words) * rng.uniform(SPAN_MIN, 1.0))
        start = int(rng.integers(0, len(words) - n + 1))
        words = words[start:start + n]
    keep = rng.random(len(words)) > DROP_PROB
    if len(words) and not keep.any():
        keep[int(rng.integers(len(words)))] = True
    return " ".join(w for w, k in zip(words, keep) if k)


def with_views(dataset: Dataset, views: int, split: str = "train") -> Dataset:
    """`dataset` with K − 1 augmented, unlabeled copies of every row of `split` appended to it; rows 0..N−1
    are the originals, unchanged, so their ids, labels and fingerprint stay as they were."""
    if views == 1:
        return dataset
    if dataset.modality != "text":
        raise AftpipeError(f"{option_name('views')} augments text; dataset `{dataset.spec}` is {dataset.modality}. "
                           f"Drop {option_name('views')}")
    base = dataset.split(split)
    n = len(base)
    ids, inputs = list(base.ids), list(base.inputs)
    for v in range(1, views):
        for i in range(n):
            ids.append(f"{base.ids[i]}~view{v}")
            inputs.append(augment_text(base.inputs[i], np.random.default_rng([v, i])))
    labels = np.concatenate([base.labels, np.full((views - 1) * n, -1, dtype=np.int64)])
    origin = np.tile(np.arange(n), views)
    splits = dict(dataset.splits)
    splits[split] = Split(split, ids, inputs, labels, origin=origin)
    info = {**dataset.info, "views": views, "views_split": split}
    return Dataset(spec=dataset.spec, modality=dataset.modality, splits=splits, num_classes=dataset.num_classes,
                   metric=dataset.metric, class_names=dataset.class_names, info=info, views=views,
                   test_split=dataset.test_split, location=dataset.location)
