"""Experiments without building: the override grammar, trial names, the checks that refuse a bad
sweep before anything runs, the expression language, the Pareto front and the params edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import ParamsError
from tasks.experiments import spec, table
from tasks.experiments.launch import trials_of
from tasks.experiments.params_edit import set_keys
from tasks.params_file import load_params
from tasks.quality.expr import Expression, Missing
from tests.conftest import ROOT, doit, make_project

PROMPT = "- what is the best thing to see in chicago"  # params.yaml's smoke prompt, a line of its own


@pytest.mark.parametrize(
    ("option", "key", "values"),
    [
        ("finetune.lora_r=8,16,64", "finetune.lora_r", [8, 16, 64]),
        ("finetune.learning_rate=1e-4,2e-4", "finetune.learning_rate", [1e-4, 2e-4]),
        ("quantize.q_group_size=range(32,129,32)", "quantize.q_group_size", [32, 64, 96, 128]),
        ("evaluate.max_examples=range(3)", "evaluate.max_examples", [0, 1, 2]),
        (
            "finetune.target_modules=[q_proj,v_proj],[o_proj]",
            "finetune.target_modules",
            [["q_proj", "v_proj"], ["o_proj"]],
        ),
        ("quantize.clip_search=true,false", "quantize.clip_search", [True, False]),
        ("finetune.lora_r=8,8", "finetune.lora_r", [8]),
    ],
)
def test_the_override_grammar_reads_lists_ranges_and_yaml_values(option, key, values):
    assert spec.parse_override(option) == (key, values)


@pytest.mark.parametrize("option", ["finetune.lora_r", "=8", "finetune.lora_r=", "x=range(5,1)", "x=range(1,2,0)"])
def test_a_malformed_override_is_refused_naming_it(option):
    with pytest.raises(ParamsError, match=r"-S"):
        spec.parse_override(option)


def test_trials_are_every_combination_named_by_what_they_set_and_a_sample_is_repeatable():
    grid = {"finetune.lora_r": [8, 16], "finetune.learning_rate": [1e-4, 2e-4], "data.seed": [42]}
    trials = spec.make_trials(grid, None, 0)
    assert [t.name for t in trials] == ["r8-lr1e-4", "r8-lr2e-4", "r16-lr1e-4", "r16-lr2e-4"]
    assert trials[3].overrides == {"finetune.lora_r": 16, "finetune.learning_rate": 2e-4, "data.seed": 42}
    big = {"finetune.lora_r": list(range(1, 11)), "finetune.seed": list(range(10))}
    drawn = spec.make_trials(big, 5, seed=3)
    assert len(drawn) == 5 and drawn == spec.make_trials(big, 5, seed=3) != spec.make_trials(big, 5, seed=4)
    same_last = spec.make_trials({"data.seed": [1, 2], "finetune.seed": [1]}, None, 0)
    assert [t.name for t in same_last] == ["seed1", "seed2"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("exp") / "project")


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"finetune.lora_rank": [8]}, "finetune.lora_rank: unknown key (did you mean 'lora_r'?)"),
        (
            {"finetune.lora_r": [8, 0]},
            "-S finetune.lora_r=0: refused by the params schema:\n"
            "  finetune.lora_r: Input should be greater than or equal to 1",
        ),
        ({"quantize.q_group_size": [48]}, "quantize.q_group_size: Value error, must be a power of two"),
        ({"adapters.travl.finetune.lora_r": [8]}, "no adapter 'travl' (did you mean 'travel'?)"),
        ({"adapters.travel.finetune.lora_rank": [8]}, "lora_rank: not a finetune key (did you mean 'lora_r'?)"),
        ({"name": ["a", "b"]}, "name is not swept"),
        ({"finetune.lora_r.x": [1]}, "finetune.lora_r is a value, not a section"),
        (
            {"finetune.lora_r": list(range(1, 7)), "finetune.seed": list(range(6))},
            "36 trials (36 in the grid): more than 32",
        ),
    ],
)
def test_a_bad_sweep_is_refused_before_anything_runs(project, grid, message):
    with pytest.raises(ParamsError) as refused:
        trials_of(project, grid, None, 0, yes=False)
    assert message in str(refused.value)


def test_a_big_grid_runs_with_yes_or_a_sample(project):
    grid = {"finetune.lora_r": list(range(1, 7)), "finetune.seed": list(range(6))}
    assert len(trials_of(project, grid, None, 0, yes=True)) == 36
    assert len(trials_of(project, grid, 4, 0, yes=False)) == 4


def test_the_command_line_refuses_bad_input_with_exit_2_and_says_the_grammar(project):
    unknown = doit(project, "exp", "run", "-S", "finetune.lora_rank=8,16", "--dry-run")
    assert unknown.returncode == 2 and "did you mean 'lora_r'" in unknown.output
    empty = doit(project, "exp", "run", "--dry-run")
    assert empty.returncode == 2 and "nothing to sweep" in empty.output
    none = doit(project, "exp", "show")
    assert none.returncode == 2 and "no sweep recorded yet" in none.output
    helped = doit(project, "help", "exp")
    assert "range(start,stop[,step])" in helped.output and "--where" in helped.output


@pytest.mark.parametrize(
    ("text", "values", "result"),
    [
        ("size_mb <= 300 and decode_tok_s >= 40", {"size_mb": 250, "decode_tok_s": 41}, True),
        ("size_mb <= 300 and decode_tok_s >= 40", {"size_mb": 250, "decode_tok_s": 39}, False),
        ("ppl_awq <= 1.10 * ppl_base", {"ppl_awq": 10.9, "ppl_base": 10}, True),
        ("1 < ppl < 5 or not answer_match > 0.5", {"ppl": 6, "answer_match": 0.2}, True),
        ("abs(ppl - ppl_base) / ppl_base < 0.05", {"ppl": 10.4, "ppl_base": 10}, True),
    ],
)
def test_expressions_compare_figures(text, values, result):
    assert Expression(text, "--where")(values) is result


@pytest.mark.parametrize("text", ["__import__('os')", "ppl.real", "[ppl]", "'a' < ppl", "ppl if ppl else 1", "ppl(1)"])
def test_an_expression_names_figures_and_numbers_only(text):
    with pytest.raises(ParamsError, match="--where"):
        Expression(text, "--where")


def test_an_expression_on_a_missing_figure_says_which():
    with pytest.raises(Missing, match="decode_tok_s"):
        Expression("decode_tok_s > 1", "--where")({"ppl": 3})


def _row(trial: str, ppl: float, size: float, speed: float, status: str = "done") -> dict:
    figures = {"ppl": ppl, "size_mb": size, "decode_tok_s": speed}
    return {"trial": trial, "adapter": "a", "status": status, "params": {}, "metrics": figures, "delta": {}}


def test_the_pareto_front_keeps_trials_no_feasible_one_beats_on_every_figure():
    rows = [_row("a", 10, 5, 50), _row("b", 11, 4, 50), _row("c", 12, 6, 40), _row("d", 9, 9, 60, "failed")]
    judged = {r["trial"]: r for r in table.judge(rows, "size_mb < 5.5", {})}
    assert [judged[t]["pareto"] for t in "ab"] == [True, True]
    assert judged["c"]["feasible"] is False and judged["d"]["feasible"] is False
    assert [r["trial"] for r in table.ordered(list(judged.values()), "-decode_tok_s,size_mb")][:2] == ["b", "a"]


def test_a_gate_in_params_is_checked_when_params_are_read(project):
    text = (project / "params.yaml").read_text()
    (project / "params").mkdir(exist_ok=True)
    (project / "params" / "bad-gate.yaml").write_text(text + "\ngates:\n  awq_cost: ppl_awq <= 1.1 * ppl_bse\n")
    run = doit(project, env={"LAB_PARAMS": "params/bad-gate.yaml"})
    assert run.returncode != 0 and run.ran == []
    assert "gates.awq_cost: unknown metric 'ppl_bse' (did you mean 'ppl_base'?)" in run.output


def test_setting_keys_changes_their_lines_only_and_keeps_every_comment(tmp_path):
    path = tmp_path / "params.yaml"
    original = (ROOT / "params.yaml").read_text()
    path.write_text(original)
    overrides = {
        "finetune.learning_rate": 1e-05,
        "quantize.calibration": ["data/a.jsonl"],
        "adapters.travel.finetune.lora_r": 4,
        "registry.tags.team": "lab",
        "smoke.prompts": ["hi"],
    }
    set_keys(path, overrides)
    params = load_params(path)
    assert params.finetune.learning_rate == 1e-05 and params.quantize.calibration == ["data/a.jsonl"]
    assert params.adapters["travel"].finetune == {"lora_r": 4} and params.registry.tags == {"team": "lab"}
    comments = lambda text: [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]  # noqa: E731
    assert comments(path.read_text()) == comments(original)
    removed = set(original.splitlines()) - set(path.read_text().splitlines())
    assert {line.split(":")[0].strip() for line in removed} == {
        "learning_rate",
        "calibration",
        "tags",
        "prompts",
        PROMPT,
    }


def test_a_sweep_is_named_never_reached_by_a_path(tmp_path):
    from tasks.experiments import record

    (tmp_path / "models" / "experiments").mkdir(parents=True)
    (tmp_path / "models" / "experiments" / "lora.json").write_text('{"trials": {}}')
    (tmp_path / "outside.json").write_text('{"trials": {}}')
    assert record.find(tmp_path, "lora")[0] == "lora"
    with pytest.raises(ParamsError, match="no sweep named '../../outside'"):
        record.find(tmp_path, "../../outside")
