"""The config mechanism: conversion and checks on construction, the strict loader, paths in messages."""

import dataclasses
from pathlib import Path

import pytest

from aftpipe.components import resolve
from aftpipe.config import (ConfigError, DistillConfig, ExtractConfig, MethodConfig, Partial, StudentConfig, TrainConfig,
                            convert, dump_yaml, from_dict, load_config, load_yaml)


def test_python_conveniences_are_converted_and_wrong_types_refused(tmp_path):
    c = TrainConfig(dataset="sst2", features="cache/sst2/minilm", out=tmp_path / "run", lr=1,
                    method_options={"beta": 0.3})
    assert c.features == ("cache/sst2/minilm",)  # one store given as a string
    assert c.out == str(tmp_path / "run") and isinstance(c.lr, float) and c.lr == 1.0
    assert c.method_options == MethodConfig(beta=0.3)  # a mapping becomes the nested config
    with pytest.raises(ConfigError, match=r"^lr: expected a number, got '1e-3'$"):
        TrainConfig(dataset="sst2", features=("x",), out="r", lr="1e-3")
    with pytest.raises(ConfigError, match=r"^epochs: expected an integer, got True$"):
        TrainConfig(dataset="sst2", features=("x",), out="r", epochs=True)
    with pytest.raises(ConfigError, match=r"^method_options\.tau: must be > 0, got 0$"):
        TrainConfig(dataset="sst2", features=("x",), out="r", method_options={"tau": 0})
    with pytest.raises(ConfigError, match=r"^method_options\.taux: unknown key; did you mean `tau`\?$"):
        TrainConfig(dataset="sst2", features=("x",), out="r", method_options={"taux": 1})


def test_every_config_checks_its_own_values_on_construction_and_on_replace():
    ok = TrainConfig(dataset="sst2", out="r", method="none")
    with pytest.raises(ConfigError, match="^holdout: must be in"):
        dataclasses.replace(ok, holdout=1.0)
    with pytest.raises(ConfigError, match="^dtype: expected one of float16, bfloat16, float32, got 'float8'$"):
        ExtractConfig(dataset="sst2", dtype="float8")
    with pytest.raises(ConfigError, match="^dropout: must be in"):
        StudentConfig(dropout=1.0)


def test_names_are_resolved_at_the_api_boundary_not_on_construction():
    unknown = TrainConfig(dataset="sst3", out="r", student="cnn")  # plain data: no registry is asked
    with pytest.raises(ConfigError, match="^dataset: no dataset `sst3`; known: "):
        resolve(unknown)
    with pytest.raises(ConfigError, match="^student: no student `cnn`; known: "):
        resolve(dataclasses.replace(unknown, dataset="sst2", method="none"))
    with pytest.raises(ConfigError, match="^features: method `aft` needs cached features"):
        resolve(TrainConfig(dataset="sst2", out="r"))
    with pytest.raises(ConfigError, match=r"^sources\[1\]: no source `bert`"):
        resolve(ExtractConfig(dataset="sst2", sources=("minilm", "bert")))
    with pytest.raises(ConfigError, match="^student: no student `cnn`"):
        resolve(DistillConfig(dataset="sst2", out="m", student="cnn"))
    ok = TrainConfig(dataset="sst2", out="r", features="cache/sst2/minilm", student="textcnn@width=8")
    assert resolve(ok) is ok


def test_from_dict_refuses_unknown_and_missing_keys_with_their_path():
    with pytest.raises(ConfigError, match=r"^cfg\.out: required key missing$"):
        from_dict(TrainConfig, {"dataset": "sst2", "method": "none"}, ("cfg",))
    with pytest.raises(ConfigError, match=r"^epoch: unknown key; did you mean `epochs`\?$"):
        from_dict(TrainConfig, {"dataset": "sst2", "out": "r", "method": "none", "epoch": 3})
    assert convert(None, Partial[MethodConfig]) == {}
    assert convert({"tau": 2}, Partial[MethodConfig], ("o",)) == {"tau": 2.0}
    with pytest.raises(ConfigError, match=r"^o\.beta\[1\]: expected a number, got 'x'$"):
        convert({"beta": [0.1, "x"]}, dict[str, tuple[float, ...]], ("o",))


def test_a_dumped_config_loads_back_equal(tmp_path):
    c = TrainConfig(dataset="sst2", features=("a", "b"), out="r", method_options=MethodConfig(beta=0.1),
                    student_options=StudentConfig(width=32), steps=7)
    (tmp_path / "c.yaml").write_text(dump_yaml(c))
    assert load_config(TrainConfig, tmp_path / "c.yaml") == c
    (tmp_path / "bad.yaml").write_text(dump_yaml(c).replace("steps: 7", "steps: 0"))
    with pytest.raises(ConfigError.__mro__[1], match=r"bad\.yaml: steps: must be ≥ 1, got 0$"):
        load_config(TrainConfig, tmp_path / "bad.yaml")


def test_yaml_reads_exponent_floats_and_reports_bad_syntax_on_one_line(tmp_path):
    p = Path(tmp_path / "x.yaml")
    p.write_text("lr: [1e-3, 3.0e-3]\n")
    assert load_yaml(p) == {"lr": [0.001, 0.003]}
    p.write_text("lr: [1e-3\n")
    with pytest.raises(Exception, match=r"x\.yaml: line \d+: not valid YAML") as e:
        load_yaml(p)
    assert "\n" not in str(e.value)


def test_yaml_refuses_repeated_keys_and_runaway_aliases(tmp_path):
    from aftpipe.config import load_yaml, shown
    from aftpipe.errors import AftpipeError

    def load(text):
        (tmp_path / "p.yaml").write_text(text)
        return load_yaml(tmp_path / "p.yaml")

    with pytest.raises(AftpipeError, match=r"p.yaml: line 3: the key `seeds` is given twice \(also line 1\)"):
        load("seeds: [0, 1, 2]\nmethods: []\nseeds: [5]\n")
    with pytest.raises(AftpipeError, match=r"line 3: the key `lr` is given twice \(also line 2\)"):
        load("train:\n  lr: 0.1\n  lr: 0.2\n")
    # a merge (`<<`) is overridden by design, and the same key in two mappings is no repeat
    assert load("base: &b {lr: 0.1, steps: 2}\ntrain:\n  <<: *b\n  lr: 0.2\nother: {lr: 3}\n") == {
        "base": {"lr": 0.1, "steps": 2}, "train": {"lr": 0.2, "steps": 2}, "other": {"lr": 3}}
    assert load("a: &a [1, 2]\nb: [*a, *a]\n") == {"a": [1, 2], "b": [[1, 2], [1, 2]]}  # a few aliases are fine
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    with pytest.raises(AftpipeError, match="aliases expand to more than 100,000 values") as e:
        load(bomb)
    assert len(str(e.value)) < 300
    with pytest.raises(AftpipeError, match="an alias refers to a value that contains it"):
        load("seeds: &s [0, *s]\n")
    assert len(shown("x" * 10**6)) < 100 and len(shown([list(range(10**4))] * 10**3)) < 200


def test_a_field_is_named_by_its_flag_from_its_name_or_an_error_path():
    from aftpipe.config import flag_of

    assert flag_of("out") == "--out" and flag_of("split_map") == "--split-map"
    assert flag_of("sources") == "--source" and flag_of(("sources", 1)) == "--source"  # declared with flag=
    assert flag_of(("student_options", "layers")) == "--student-layers" and flag_of(("method_options", "tau")) == "--tau"
