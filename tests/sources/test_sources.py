import numpy as np
import pytest
import torch

from aftpipe.errors import AftpipeError
from aftpipe.sources import SOURCES, SourceOptions, load_source, pool, store_name


def test_mean_pool_matches_hand_computation():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    got = pool(hidden, mask, "mean")
    # row 0 ignores the padding token; row 1 averages all three
    assert torch.allclose(got, torch.tensor([[2.0, 3.0], [2.0, 3.0]]))
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.equal(pool(hidden, mask, "last"), torch.tensor([[3.0, 4.0], [4.0, 5.0]]))


def test_unknown_pooling_is_refused_by_the_options():
    with pytest.raises(AftpipeError, match="^pooling: expected one of mean, cls, last, got 'max'"):
        SourceOptions(pooling="max")


def test_store_names_come_from_the_sources_without_loading_them(tiny_hf_dir):
    assert store_name("minilm") == "minilm" and store_name("tfidf") == "tfidf"
    assert store_name("minilm", SourceOptions(pooling="cls", layer=3)) == "minilm-cls-layer3"
    assert store_name("hf:org/some-model") == "hf-some-model"
    assert store_name(f"hf:{tiny_hf_dir}/") == load_source(f"hf:{tiny_hf_dir}").name


def test_hf_source_features_equal_plain_transformers(tiny_hf_dir):
    from transformers import AutoModel, AutoTokenizer

    src = load_source(f"hf:{tiny_hf_dir}")
    texts = ["a short one", "a somewhat longer sentence about films", "x"]
    got = src.forward(src.collate(texts)).numpy()
    tok, model = AutoTokenizer.from_pretrained(tiny_hf_dir), AutoModel.from_pretrained(tiny_hf_dir).eval()
    with torch.no_grad():  # one sentence at a time: no padding at all in the reference
        ref = np.stack([model(**tok(t, return_tensors="pt")).last_hidden_state[0].mean(0).numpy() for t in texts])
    assert got.shape == (3, 32)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_hf_layer_and_cls_options(tiny_hf_dir):
    from transformers import AutoModel, AutoTokenizer

    src = load_source(f"hf:{tiny_hf_dir}", SourceOptions(pooling="cls", layer=1))
    assert src.name.endswith("-cls-layer1")
    tok, model = AutoTokenizer.from_pretrained(tiny_hf_dir), AutoModel.from_pretrained(tiny_hf_dir).eval()
    with torch.no_grad():
        ref = model(**tok(["hello there"], return_tensors="pt"), output_hidden_states=True).hidden_states[1][:, 0]
    np.testing.assert_allclose(src.forward(src.collate(["hello there"])).numpy(), ref.numpy(), atol=1e-5)
    with pytest.raises(AftpipeError, match="--layer 7 is out of range"):
        load_source(f"hf:{tiny_hf_dir}", SourceOptions(layer=7))


def test_real_minilm_on_a_few_sentences():
    """The real all-MiniLM-L6-v2 weights: similar sentences are closer than unrelated ones."""
    src = load_source("minilm")
    assert src.dim == 384 and src.params > 20_000_000
    assert len(src.spec()["weights_sha256"]["model.safetensors"]) == 64
    x = src.forward(src.collate(["a wonderful, moving film", "a great and touching movie",
                                 "the stock market fell sharply today"])).numpy()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2


def test_timm_source_from_local_dir(tiny_timm_dir):
    import timm

    src = load_source(f"timm:{tiny_timm_dir}")
    imgs = [np.random.default_rng(i).integers(0, 255, (8, 8), dtype=np.uint8) for i in range(3)]
    feats = src.forward(src.collate(imgs))
    assert feats.shape == (3, src.dim)
    model = timm.create_model(f"local-dir:{tiny_timm_dir}", pretrained=True, num_classes=0).eval()
    with torch.no_grad():
        ref = model.forward_head(model.forward_features(src.collate(imgs)), pre_logits=True)
    torch.testing.assert_close(feats, ref)
    assert src.spec()["data_config"]["input_size"][1] > 8  # the model's own data config resized the 8x8 digits


def test_timm_layer_is_a_feature_stage_averaged_over_space(tiny_timm_dir):
    import timm

    src = load_source(f"timm:{tiny_timm_dir}", SourceOptions(layer=1))
    imgs = [np.random.default_rng(i).integers(0, 255, (8, 8), dtype=np.uint8) for i in range(3)]
    feats = src.forward(src.collate(imgs))
    model = timm.create_model(f"local-dir:{tiny_timm_dir}", pretrained=True, num_classes=0).eval()
    with torch.no_grad():
        maps = model.forward_intermediates(src.collate(imgs), indices=[1], intermediates_only=True)[0]
    torch.testing.assert_close(feats, maps.mean(dim=(2, 3)))
    assert src.dim == model.feature_info[1]["num_chs"] != model.num_features
    assert src.spec()["layer"] == 1 and src.spec()["pooling"] == "spatial_mean"
    # each variant has a store of its own; the default keeps the name it always had
    names = {store_name(f"timm:{tiny_timm_dir}", o) for o in (SourceOptions(), SourceOptions(layer=1),
                                                               SourceOptions(image_size=64))}
    assert names == {"timm-" + tiny_timm_dir.name, f"timm-{tiny_timm_dir.name}-layer1",
                     f"timm-{tiny_timm_dir.name}-size64"}


def test_timm_layer_beyond_the_stages_is_refused(tiny_timm_dir):
    with pytest.raises(AftpipeError, match="has 5 feature stages, so no layer 5; pass a layer from 0 to 4"):
        load_source(f"timm:{tiny_timm_dir}", SourceOptions(layer=5))


def test_tfidf_fits_on_train_only_and_is_deterministic():
    texts = [f"word{i % 37} other{i % 11} film number {i % 5}" for i in range(400)]
    a, b = load_source("tfidf", SourceOptions(tfidf_dim=8)), load_source("tfidf", SourceOptions(tfidf_dim=8))
    a.fit(texts)
    b.fit(texts)
    assert a.spec()["projection_sha256"] == b.spec()["projection_sha256"]
    np.testing.assert_array_equal(a.forward(texts[:5]).numpy(), b.forward(texts[:5]).numpy())
    assert a.forward(["unseen words only"]).shape == (1, 8)


@pytest.mark.parametrize("spec,msg", [
    ("nope", "no source `nope`"),
    ("hf:/no/such/model", "does not exist"),
    ("hf:", "needs an argument"),
    ("timm:/no/such/dir", "does not exist"),
])
def test_bad_sources_are_user_errors(spec, msg):
    with pytest.raises(AftpipeError, match=msg):
        load_source(spec)


def test_registry_lists_every_source():
    assert {"minilm", "hf:", "timm:", "tfidf"} <= set(SOURCES.names())


def test_prompted_last_token_features_as_the_authors_extract_them(tiny_hf_dir):
    from transformers import AutoModel, AutoTokenizer

    template = 'Review: "{text}"\nSentiment:'
    opts = SourceOptions(pooling="last", prompt=template)
    src = load_source(f"hf:{tiny_hf_dir}", opts)
    assert src.name == store_name(f"hf:{tiny_hf_dir}", opts) != store_name(f"hf:{tiny_hf_dir}")
    assert src.name.startswith(f"hf-{tiny_hf_dir.name}-last-prompt") and src.spec()["prompt"] == template
    texts = ["a film {with braces}", "dull"]
    got = src.forward(src.collate(texts)).numpy()
    tok, model = AutoTokenizer.from_pretrained(tiny_hf_dir), AutoModel.from_pretrained(tiny_hf_dir).eval()
    for i, t in enumerate(texts):  # one at a time: no padding, so the last token is the last position
        enc = tok(template.replace("{text}", t), return_tensors="pt")
        with torch.no_grad():
            want = model(**enc).last_hidden_state[0, -1].numpy()
        np.testing.assert_allclose(got[i], want, atol=1e-5)
    with pytest.raises(AftpipeError, match="^prompt: has no {text}"):
        SourceOptions(prompt="Review:")
    assert "prompt" not in load_source(f"hf:{tiny_hf_dir}").spec()  # stores built before prompts keep their key


def test_a_spec_may_carry_its_own_options():
    from aftpipe.components import resolve
    from aftpipe.config import ConfigError, ExtractConfig

    assert store_name("minilm@layer=2") == "minilm-layer2"
    assert store_name("minilm@pooling=cls,layer=4") == "minilm-cls-layer4"
    assert store_name("minilm@layer=2", SourceOptions(pooling="last")) == "minilm-last-layer2"  # the spec wins where it speaks
    with pytest.raises(ConfigError, match=r"^sources\[0\]: `minilm@layr=2`: layr: unknown key; did you mean `layer`"):
        resolve(ExtractConfig(dataset="sst2", sources=("minilm@layr=2",)))
    with pytest.raises(AftpipeError, match="write its options as NAME@key=value"):
        store_name("minilm@=2")


def test_an_option_no_source_reads_is_refused_by_name(tiny_hf_dir):
    from aftpipe.config import ConfigError
    from aftpipe.sources import check_options

    other = {"pooling": "cls", "layer": 1, "max_length": 16, "tfidf_dim": 8, "image_size": 32, "prompt": "R: {text}"}
    for spec in ("tfidf", f"hf:{tiny_hf_dir}"):
        own = SOURCES.get(spec).Options.field_names()
        # what a source does not read cannot change its store, so refusing it loses nothing
        assert store_name(spec, SourceOptions(**{k: v for k, v in other.items() if k not in own})) == store_name(spec)
        for key in set(other) - set(own):
            with pytest.raises(ConfigError, match=f"^{key}: does not apply to source `"):
                check_options([spec], SourceOptions(**{key: other[key]}))
    check_options(["tfidf", f"hf:{tiny_hf_dir}"], SourceOptions(pooling="cls", tfidf_dim=8))  # each read by one
    with pytest.raises(AftpipeError, match="^`tfidf@layer=2`: layer does not apply to source `tfidf`; drop it"):
        check_options(["tfidf@layer=2"])
