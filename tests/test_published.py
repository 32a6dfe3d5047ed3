"""The published-results file and its validating reader (taskeval.published)."""

import copy

import pytest
import yaml

from taskeval.data import load_card
from taskeval.errors import ConfigError
from taskeval.published import default_path, load_published, published_rows

M3FD = load_card("m3fd").det_classes
MSRS = load_card("msrs").seg_classes


def _protocol_table(text: str, heading: str) -> tuple[list[str], dict[str, list[float]]]:
    """(column names, method -> values incl. the headline) of the first markdown table after ``heading``."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    table = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[start:end]]
    return table[0][1:], {cells[0]: [float(c) for c in cells[1:]] for cells in table[2:]}


def test_protocol_md_rows_present_and_equal(shared):
    text = (shared / "PROTOCOL.md").read_text()
    methods = {"IR": "ir", "VI": "vis", "TarDAL": "tardal", "CDDFuse": "cddfuse", "EMMA": "emma"}
    # independent column mapping: M3FD by name (Motor is the paper's Motorcycle), MSRS by position
    det_cols, det = _protocol_table(text, "M3FD detection, AP@0.5")
    det_map = {"Motor": "Motorcycle"}
    seg_cols, seg = _protocol_table(text, "MSRS segmentation, IoU")
    assert len(det) == 5 and len(seg) == 4 and seg_cols[:-1] == ["Unl", "Car", "Person", "Bike", "Curve",
                                                                  "CarStop", "Guardrail", "Cone", "Bump"]
    cases = (("m3fd", "detection", M3FD, det, [det_map.get(c, c) for c in det_cols[:-1]]),
             ("msrs", "segmentation", MSRS, seg, list(MSRS)))
    for dataset, task, classes, table, names in cases:
        got = {r.method: r for r in published_rows(dataset, task, classes)}
        for paper_name, values in table.items():
            row = got[methods[paper_name]]
            assert row.headline == values[-1], (dataset, paper_name)
            assert row.per_class == dict(zip(names, values[:-1])), (dataset, paper_name)
            assert list(row.per_class) == list(classes)  # card order
            assert row.label == paper_name and row.source and row.url.startswith("https://")


def test_rows_carry_source_protocol_and_definition():
    rows = published_rows("msrs", "segmentation", MSRS)
    cdd = next(r for r in rows if r.method == "cddfuse")
    assert cdd.metric == "mIoU" and "all 9 classes" in cdd.definition and "unlabeled" in cdd.definition
    assert "CVPR 2023" in cdd.source and cdd.repository == "https://github.com/Zhaozixiang1228/MMIF-CDDFuse"
    assert "DeepLabV3+" in cdd.network and cdd.verified is False and cdd.note
    emma = next(r for r in rows if r.method == "emma")
    assert emma.per_class == {} and emma.headline == 63.7  # headline only, per-class not transcribed
    assert published_rows("fmb", "segmentation", load_card("fmb").seg_classes) == []
    assert default_path().is_file()


def _write(tmp_path, mutate):
    raw = yaml.safe_load(default_path().read_text())
    raw = copy.deepcopy(raw)
    mutate(raw)
    path = tmp_path / "results.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _table(raw, tid):
    return next(t for t in raw["tables"] if t["id"] == tid)


def test_class_names_must_map_onto_the_card(tmp_path):
    path = _write(tmp_path, lambda r: _table(r, "cddfuse-m3fd-detection").pop("class_map"))
    with pytest.raises(ConfigError, match=r"column\(s\) \['Motor'\] name no class of the m3fd card.*"
                                          r"did you mean 'Motorcycle'.*class_map"):
        published_rows("m3fd", "detection", M3FD, path)
    # a card with another class list: a clear error, not a silent partial match
    with pytest.raises(ConfigError, match=r"no column for the m3fd card's class\(es\) \['Bicycle'\]"):
        published_rows("m3fd", "detection", M3FD + ("Bicycle",))
    with pytest.raises(ConfigError, match=r"\['Truck'\] name no class"):
        published_rows("m3fd", "detection", M3FD[:-1])
    # the MSRS paper columns differ from the card's names by case: mapped explicitly, not guessed
    path = _write(tmp_path, lambda r: _table(r, "cddfuse-msrs-segmentation")["class_map"].pop("Car"))
    with pytest.raises(ConfigError, match=r"\['Car'\] name no class of the msrs card.*did you mean 'car'"):
        published_rows("msrs", "segmentation", MSRS, path)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: _table(r, "cddfuse-m3fd-detection")["rows"][0]["values"].pop(), r"method 'ir': 5 values for 6 columns"),
    (lambda r: _table(r, "cddfuse-m3fd-detection")["rows"][1].update(headline=77.9),
     r"method 'vis': headline 77.9 is not the mean of its per-class values \(77.6900\)"),
    (lambda r: _table(r, "cddfuse-m3fd-detection")["rows"][0]["values"].__setitem__(0, 178.75),
     r"method 'ir': value of Bus: expected a number in 0..100"),
    (lambda r: _table(r, "cddfuse-m3fd-detection")["rows"].append(
        dict(_table(r, "cddfuse-m3fd-detection")["rows"][0])), r"method 'ir': listed twice"),
    (lambda r: _table(r, "cddfuse-m3fd-detection").update(source="cdfuse"), r"unknown source 'cdfuse'.*cddfuse"),
    (lambda r: _table(r, "cddfuse-m3fd-detection").update(metrc="x"), r"unknown key\(s\) \['metrc'\].*'metric'"),
    (lambda r: _table(r, "cddfuse-m3fd-detection").pop("protocol"), r"missing key\(s\) \['protocol'\]"),
    (lambda r: _table(r, "emma-m3fd-detection").update(id="cddfuse-m3fd-detection"), r"id used twice"),
    (lambda r: _table(r, "cddfuse-m3fd-detection")["class_map"].update(Moto="Motorcycle"),
     r"class_map names \['Moto'\] that are not columns"),
    (lambda r: _table(r, "cddfuse-m3fd-detection").update(task="tracking"), r"task must be one of"),
    (lambda r: r["sources"]["emma"].pop("repository"), r"source 'emma': missing key\(s\) \['repository'\]"),
])
def test_invalid_file_is_rejected_naming_the_table(tmp_path, mutate, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError, match=message) as err:
        load_published(path)
    assert str(path) in str(err.value)


def test_headline_tolerance_is_one_unit_of_the_printed_precision(tmp_path):
    # MSRS VI: mean of the printed per-class values 55.47 against the printed 55.4 (rounding of 9 values)
    load_published()
    path = _write(tmp_path, lambda r: _table(r, "cddfuse-msrs-segmentation")["rows"][0].update(headline=55.3))
    with pytest.raises(ConfigError, match="headline 55.3 is not the mean"):
        load_published(path)
