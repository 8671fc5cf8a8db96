"""``overspec sweep``: the λ grid flag and its errors."""

import pytest

from overspec.cli.main import main
from overspec.cli.sweep import parse_lambdas
from overspec.errors import InputError


def test_lambda_grid_from_a_range_or_a_list():
    assert parse_lambdas("0:1:0.25") == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert parse_lambdas("0:1:0.1")[3] == 0.3 and len(parse_lambdas("0:1:0.1")) == 11
    assert parse_lambdas("0, 0.5,1") == (0.0, 0.5, 1.0)


@pytest.mark.parametrize("text", ["a,b", "0:1", "0:1:0", "0:1:-0.1"])
def test_a_malformed_grid_is_an_error_naming_the_flag(text):
    with pytest.raises(InputError, match="--lambdas"):
        parse_lambdas(text)


def test_the_command_reports_a_bad_grid_in_one_line(capsys, tmp_path):
    assert main(["sweep", "--lambdas", "half", "--output-dir", str(tmp_path)]) == 2
    assert "--lambdas: expected values like" in capsys.readouterr().err


def test_regularised_variants_from_the_flags_or_the_defaults():
    import argparse

    from overspec.cli.sweep import add_parser, regularised_of
    from overspec.finetune.variants import FinetuneVariant
    from overspec.sweep import DEFAULT_LAMBDAS, DEFAULT_REGULARISED

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    defaults = parser.parse_args(["sweep"])
    assert regularised_of(defaults) == DEFAULT_REGULARISED and defaults.regularised_bases == 1
    assert parse_lambdas(defaults.lambdas) == DEFAULT_LAMBDAS
    given = parser.parse_args(["sweep", "--regularised", "madation:regularise.l2sp=0.1,lora.rank=2",
                               "--regularised", "foundpad:regularise.distill=1", "--regularised-bases", "0"])
    assert regularised_of(given) == (FinetuneVariant("madation", ("regularise.l2sp=0.1", "lora.rank=2")),
                                     FinetuneVariant("foundpad", ("regularise.distill=1",)))
    assert given.regularised_bases == 0
    assert regularised_of(parser.parse_args(["sweep", "--no-regularised"])) == ()
    recipes = {v.recipe for v in DEFAULT_REGULARISED}
    assert recipes == {"froundation", "madation", "foundpad"} and len(DEFAULT_REGULARISED) <= 3 * len(recipes)


def test_a_malformed_variant_is_reported_in_one_line(capsys, tmp_path):
    assert main(["sweep", "--regularised", "froundation", "--output-dir", str(tmp_path)]) == 2
    assert "expected RECIPE:KEY=VALUE" in capsys.readouterr().err
