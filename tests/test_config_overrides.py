"""``key=value`` overrides on the command line: YAML flow lists, comma lists and mappings reach the
configuration as the same values (``key=[a,b]`` once kept the raw string and gave a method ``'[ir'``)."""

import pytest

from taskeval.benchmark import load_benchmark_config
from taskeval.config import parse_overrides
from taskeval.errors import ConfigError
from taskeval.joint_experiment import load_experiment


def test_values_parsed_as_yaml():
    assert parse_overrides(["seeds=[0,1]", "det.epochs=3", "name=x", "lam=0.5", "empty="]) == {
        "seeds": [0, 1], "det": {"epochs": 3}, "name": "x", "lam": 0.5, "empty": ""}
    assert parse_overrides(["a={b: 1, c: [x, y]}"]) == {"a": {"b": 1, "c": ["x", "y"]}}
    assert parse_overrides(["methods=ir,vis"]) == {"methods": "ir,vis"}  # split by the field that reads it
    assert parse_overrides(["det=null"]) == {"det": None}
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["seeds"])


@pytest.mark.parametrize("flow, comma", [
    (["methods=[ir,vis]", "seeds=[0,1]", "tasks=[detection]"], ["methods=ir,vis", "seeds=0,1", "tasks=detection"]),
    (["methods=[ir, vis, average]"], ["methods=ir,vis,average"]),
])
def test_benchmark_flow_and_comma_lists_agree(flow, comma):
    a, b = load_benchmark_config("quick", flow), load_benchmark_config("quick", comma)
    assert a == b
    assert all(not m.name.startswith("[") for m in a.methods)
    assert [m.name for m in a.methods] == [o.split("=", 1)[1].strip("[]").replace(" ", "").split(",")
                                           for o in flow if o.startswith("methods")][0]


def test_joint_experiment_flow_lists():
    a = load_experiment("joint-synth", ["references=[ir,vis]", "seeds=[0,1]", "det=null"])
    b = load_experiment("joint-synth", ["references=ir,vis", "seeds=0,1", "det=null"])
    assert a == b
    assert [r.name for r in a.references] == ["ir", "vis"] and a.seeds == (0, 1) and a.det is None


def test_list_for_a_string_field_is_a_clear_error():
    with pytest.raises(ConfigError, match="device: expected a string"):
        load_benchmark_config("quick", ["device=[0,1]"])
