"""`fedgate report DIR` on an experiment directory: curves against the centralized line,
final accuracy over seeds, bytes to reach the target, and the gap per cell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedgate.cli import main
from fedgate.errors import ConfigError
from fedgate.experiment import ExperimentDir
from fedgate.report import render_report
from fedgate.report.blocks import megabytes
from fedgate.report.experiment_data import load_experiment
from tests.experiment.conftest import run_logged, tiny_spec
from tests.report.test_render import CODEC_ROWS, write


def cell_result(directory: Path, index: int) -> dict[str, Any]:
    cell = tiny_spec().cells()[index]
    document = json.loads(ExperimentDir(directory).cell_path(cell).read_text())
    result: dict[str, Any] = document["result"]
    return result


def test_the_report_states_the_gap_per_cell_and_draws_the_curves(experiment_copy: Path) -> None:
    markdown, html = render_report([experiment_copy], experiment_copy)
    text = markdown.read_text()
    central = cell_result(experiment_copy, 0)["final_accuracy"]
    for index, partition in ((1, "iid"), (2, "dirichlet:0.5")):
        federated = cell_result(experiment_copy, index)["final_accuracy"]
        gap = (federated - central) * 100
        row = (
            f"| {partition}, seed 0 | {federated * 100:.2f} % | {central * 100:.2f} % "
            f"| {gap:+.2f} pp |"
        )
        assert row in text
    assert text.startswith("# fedgate experiment report\n\n## Experiment tiny\n")
    for title in (
        "## Accuracy per round",
        "## FL vs centralized gap",
        "## Final accuracy over seeds",
        "## Bytes to reach 50.00 % accuracy",
        "## Data partition",
    ):
        assert title in text
    assert "3 of 3 cells finished" in text
    assert "| centralized epochs | 2 |" in text
    for image in ("tiny-accuracy-per-round.png", "tiny-final-accuracy.png", "tiny-partition-1.png"):
        assert (experiment_copy / image).read_bytes().startswith(b"\x89PNG")
        assert f"]({image})" in text
    assert html.read_text().count("data:image/png;base64,") == 4


def test_bytes_to_reach_the_target_count_every_round_until_it_is_reached(
    experiment_copy: Path,
) -> None:
    render_report([experiment_copy], experiment_copy)
    text = (experiment_copy / "report.md").read_text()
    for index, partition in ((1, "iid"), (2, "dirichlet:0.5")):
        rounds = cell_result(experiment_copy, index)["rounds"]
        first = next(n for n, r in enumerate(rounds) if r["accuracy"] >= 0.5)
        spent = sum(r["bytes_up"] + r["bytes_down"] for r in rounds[: first + 1])
        assert f"| {partition} | 1 of 1 | {first + 1:.1f} | {megabytes(spent)} |" in text


def test_unfinished_cells_are_named_and_the_rest_still_drawn(experiment_copy: Path) -> None:
    baseline, iid, _ = tiny_spec().cells()
    ExperimentDir(experiment_copy).cell_path(iid).unlink()
    markdown, _ = render_report([experiment_copy], experiment_copy / "report")
    text = markdown.read_text()
    assert f"Not finished yet: {iid.id}." in text and "2 of 3 cells finished" in text
    assert "| dirichlet:0.5, seed 0 |" in text and "| iid, seed 0 |" not in text
    ExperimentDir(experiment_copy).cell_path(baseline).unlink()
    text = render_report([experiment_copy], experiment_copy / "report")[0].read_text()
    assert "No gap can be stated: no centralized cell has finished." in text


def test_report_dir_writes_into_the_experiment_directory(
    experiment_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(experiment_copy)]) == 0
    assert (experiment_copy / "report.md").is_file() and (experiment_copy / "report.html").is_file()
    assert (
        f"fedgate report {experiment_copy} --out {experiment_copy}"
        in (experiment_copy / "report.md").read_text()
    )
    assert "wrote" in capsys.readouterr().out


def test_an_experiment_and_bench_results_share_one_report(
    experiment_copy: Path, tmp_path: Path
) -> None:
    results = write(tmp_path / "codecs.json", CODEC_ROWS)
    markdown, _ = render_report([results, experiment_copy], tmp_path / "both")
    text = markdown.read_text()
    assert text.startswith("# fedgate bench report")
    assert "## Machine and commands" in text and "## Experiment tiny" in text


def test_a_second_session_is_recorded_beside_the_first(experiment_copy: Path) -> None:
    run_logged(tiny_spec(), experiment_copy)
    experiment = load_experiment(experiment_copy)
    assert [len(s["ran"]) for s in experiment.sessions] == [3, 0]
    text = render_report([experiment_copy], experiment_copy)[0].read_text()
    assert text.count(" | yes |") == 2


def edit(path: Path, change: Any) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("cells"), "'cells' must be a list"),
        (lambda d: d["cells"][0].update(file="../elsewhere.json"), "inside the experiment"),
        (lambda d: d["cells"][0].update(kind="quantum"), "kind must be federated or"),
        (lambda d: d.update(machine=[]), "'machine' must be a dict"),
    ],
)
def test_a_malformed_experiment_is_refused_with_the_field_named(
    experiment_copy: Path, change: Any, message: str
) -> None:
    edit(experiment_copy / "experiment.json", change)
    with pytest.raises(ConfigError, match=r"experiment\.json") as raised:
        render_report([experiment_copy], experiment_copy)
    assert message in raised.value.message


def test_a_malformed_cell_file_is_refused_with_the_file_named(experiment_copy: Path) -> None:
    path = ExperimentDir(experiment_copy).cell_path(tiny_spec().cells()[1])
    edit(path, lambda d: d["result"]["rounds"][0].update(accuracy="high"))
    with pytest.raises(ConfigError, match=rf"{path.name}: step 0: 'accuracy' must be a number"):
        render_report([experiment_copy], experiment_copy)
    edit(path, lambda d: d["result"]["rounds"][0].update(accuracy=0.5, bytes_up=-1))
    with pytest.raises(ConfigError, match="a round needs its number, bytes_up and bytes_down"):
        render_report([experiment_copy], experiment_copy)


def test_a_directory_that_is_no_experiment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is not an experiment directory \(no experiment.json"):
        render_report([tmp_path], tmp_path / "report")
