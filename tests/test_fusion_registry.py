"""Contract tests over every registered fusion method, the registry, plug-ins and weight loading."""

import sys
import textwrap

import pytest
import torch

from fusion_models import FUSION_MODELS, create_fusion_model, get_fusion_spec, list_fusion_models
from fusion_models.weights import load_weights
from taskeval.cli.main import main
from taskeval.errors import ConfigError, RegistryError, WeightsError
from taskeval.fusing import apply_fusion

H, W = 32, 40  # a multiple of 8 in both directions, small enough for every network on a CPU


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, H, W, generator=g), torch.rand(2, 3, H, W, generator=g)


def _text(spec, n):
    return torch.randn(n, 8, 768, generator=torch.Generator().manual_seed(1)) if spec.needs_text else None


@pytest.mark.parametrize("name", list_fusion_models())
def test_contract(name, pair):
    """shape, range, dtype, determinism, no NaN, batch independence on tiny CPU inputs."""
    torch.manual_seed(0)
    model = create_fusion_model(name)
    spec = get_fusion_spec(name)
    ir, vis = pair
    text = _text(spec, 2)
    with torch.no_grad():
        out = apply_fusion(model, ir, vis, text=text)
        again = apply_fusion(model, ir, vis, text=text)
        single = apply_fusion(model, ir[1:], vis[1:], text=None if text is None else text[1:])
    channels = 1 if (spec.output == "y" and not spec.recolor) else 3
    assert out.shape == (2, channels, H, W) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    torch.testing.assert_close(out[1:], single, rtol=0, atol=2e-5)
    assert model.spec is spec and not model.training


def test_reference_rows_are_the_inputs(pair):
    ir, vis = pair
    torch.testing.assert_close(apply_fusion(create_fusion_model("ir"), ir, vis), ir)
    torch.testing.assert_close(apply_fusion(create_fusion_model("vis"), ir, vis), vis)


def test_required_methods_are_registered():
    for name in ("ir", "vis", "average", "max", "laplacian", "gff", "ignet", "smfnet", "film", "mlfuse",
                 "seafusion", "tardal"):
        assert name in FUSION_MODELS
    assert list_fusion_models("tardal*")[0] == "tardal"


def test_typo_and_bad_kwargs():
    with pytest.raises(RegistryError, match="did you mean 'seafusion'"):
        create_fusion_model("seafuison")
    with pytest.raises(ConfigError, match="takes no argument"):
        create_fusion_model("average", levels=3)


def test_duplicate_name_rejected():
    from fusion_models import register_fusion_model

    with pytest.raises(RegistryError, match="already registered"):
        register_fusion_model("max", trainable=False)(lambda: None)


def test_mismatched_weights_listed(tmp_path):
    sd = {"bogus.weight": torch.zeros(3)}
    torch.save({"model": sd}, tmp_path / "w.pth")
    with pytest.raises(WeightsError) as exc:
        create_fusion_model("seafusion", weights=str(tmp_path / "w.pth"))
    msg = str(exc.value)
    assert "missing keys" in msg and "unexpected keys (1): bogus.weight" in msg
    model = create_fusion_model("seafusion")
    sd = model.state_dict()
    key = next(k for k, v in sd.items() if v.ndim == 4)
    sd[key] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_weights(model, {"state_dict": sd})


def test_untrusted_pickle_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights_only=True"):
        create_fusion_model("seafusion", weights=str(tmp_path / "evil.pth"))


def test_plugin_file_via_cli(tmp_path, capsys):
    plugin = tmp_path / "my_fusion.py"
    plugin.write_text(textwrap.dedent("""
        import torch
        from fusion_models import register_fusion_model

        @register_fusion_model("my-plugin-mean", trainable=False, paper="Me 2026")
        def factory():
            class M(torch.nn.Module):
                def forward(self, ir, vis):
                    return (ir + vis) / 2
            return M()
    """))
    try:
        assert main(["--plugin", str(plugin), "models", "my-*"]) == 0
        assert "my-plugin-mean" in capsys.readouterr().out
        assert get_fusion_spec("my-plugin-mean").paper == "Me 2026"
    finally:
        FUSION_MODELS.unregister("my-plugin-mean")


def test_entry_point_plugins(monkeypatch, tmp_path):
    from importlib import metadata

    mod = tmp_path / "ep_fusion_pkg.py"
    mod.write_text(textwrap.dedent("""
        import torch
        from fusion_models import register_fusion_model

        @register_fusion_model("ep-plugin", trainable=False)
        def factory():
            return torch.nn.Identity()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = metadata.EntryPoint(name="ep", value="ep_fusion_pkg", group="taskeval.fusion_models")
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [ep] if group == "taskeval.fusion_models" else [])
    monkeypatch.setattr(FUSION_MODELS, "_plugins_loaded", False)
    try:
        assert "ep-plugin" in list_fusion_models()
    finally:
        FUSION_MODELS.unregister("ep-plugin")
        sys.modules.pop("ep_fusion_pkg", None)
