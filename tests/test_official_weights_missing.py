"""``missing_official_weights``: which official weight files a config needs and does not have, and where to get them."""

import pytest

from fusion_models import list_fusion_models
from fusion_models.registry import get_fusion_spec
from fusion_models.weights import OFFICIAL_WEIGHTS, MissingWeights, missing_official_weights
from taskeval.errors import RegistryError, WeightsError


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_lists_only_what_is_missing_with_where_to_get_it(tmp_path):
    _touch(tmp_path / "SeAFusion" / "SeAFusion.pth")
    _touch(tmp_path / "deep" / "er" / "Encoder.pkl")  # found anywhere below the folder, like resolve_weights
    got = missing_official_weights(["seafusion", "didfuse", "tardal+", "cddfuse"], tmp_path)
    assert [(m.method, m.file) for m in got] == [("didfuse", "Decoder.pkl"), ("tardal+", "tardal+.pt"),
                                                 ("cddfuse", "CDDFuse_IVF.pth")]
    assert all(isinstance(m, MissingWeights) and m.where.startswith("https://github.com/") for m in got)
    assert "MMIF-CDDFuse" in got[2].where and "models/CDDFuse_IVF.pth" in got[2].where
    _touch(tmp_path / "Decoder.pkl")
    _touch(tmp_path / "x" / "tardal+.pt")
    _touch(tmp_path / "CDDFuse_IVF.pth")
    assert missing_official_weights(["seafusion", "didfuse", "tardal+", "cddfuse"], tmp_path) == []


def test_default_folder_is_the_environment_variable(tmp_path, monkeypatch):
    _touch(tmp_path / "EMMA.pth")
    monkeypatch.setenv("TASKEVAL_WEIGHTS_DIR", str(tmp_path))
    assert missing_official_weights(["emma"]) == []
    monkeypatch.delenv("TASKEVAL_WEIGHTS_DIR")
    assert [m.file for m in missing_official_weights(["emma", "mlfuse"])] == ["EMMA.pth", "model_fuse.pth"]


def test_registered_ports_without_a_table_entry_point_at_their_repository(tmp_path):
    got = missing_official_weights(["ignet", "smfnet"], tmp_path)
    assert [(m.method, m.file) for m in got] == [("ignet", "IGNet.pth"), ("smfnet", "model_VIF.pth")]
    assert got[0].where.startswith(get_fusion_spec("ignet").url)


def test_methods_without_official_weights_and_unknown_names(tmp_path):
    with pytest.raises(WeightsError, match="average: no official weights exist"):
        missing_official_weights(["average"], tmp_path)
    with pytest.raises(RegistryError, match="did you mean 'seafusion'"):
        missing_official_weights(["seafusoin"], tmp_path)


def test_table_agrees_with_the_registry():
    for name in list_fusion_models():
        spec = get_fusion_spec(name)
        if name in OFFICIAL_WEIGHTS:
            assert spec.weights_file in OFFICIAL_WEIGHTS[name][0], name


def test_the_shared_official_weights_are_complete(shared):
    have = ["seafusion", "tardal", "tardal+", "tardal++", "mlfuse", "ifcnn", "didfuse"]
    assert missing_official_weights(have, shared / "weights") == []
