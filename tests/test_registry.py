import pytest

from aftpipe.errors import AftpipeError
from aftpipe.registry import Registry


def make():
    reg: Registry[str] = Registry("widget")
    reg.register("plain", "P", help="a plain widget")
    reg.register("hf:", "H")

    @reg.register("decorated")
    def decorated():
        """First line of the doc.

        More."""

    return reg, decorated


def test_exact_names_then_prefixes_with_their_argument():
    reg, decorated = make()
    assert reg.resolve("plain") == ("P", None)
    assert reg.resolve("hf:org/model:rev") == ("H", "org/model:rev")  # the argument may hold colons
    assert reg.get("decorated") is decorated and reg["hf:"] == "H"
    assert "plain" in reg and "hf:x" in reg and "nope" not in reg and "hf:" not in reg
    assert list(reg) == reg.names() == ["decorated", "hf:", "plain"]
    assert dict(reg.describe()) == {"decorated": "First line of the doc.", "hf:": "", "plain": "a plain widget"}


def test_misses_and_duplicates_are_refused():
    reg, _ = make()
    with pytest.raises(AftpipeError, match=r"^no widget `nope`; known: decorated, hf:, plain$"):
        reg.resolve("nope")
    with pytest.raises(AftpipeError, match=r"widget `hf:` needs an argument after the colon, e.g. `hf:NAME_OR_PATH`"):
        reg.resolve("hf:")
    with pytest.raises(KeyError):
        reg["hf:x"]  # indexing takes registered names only, no argument resolution
    with pytest.raises(ValueError, match="already registered"):
        reg.register("plain", "again")


def test_a_spec_may_carry_options_after_an_at_sign():
    reg, _ = make()
    assert reg.split_options("plain") == ("plain", {})
    assert reg.split_options("hf:/m@home/x") == ("hf:/m@home/x", {})  # an @ without key=value is part of the name
    assert reg.split_options("hf:/x@layer=2,pooling=cls,on=true") == ("hf:/x", {"layer": 2, "pooling": "cls", "on": True})
    with pytest.raises(AftpipeError, match="write its options as NAME@key=value"):
        reg.split_options("plain@=3")
