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
