"""`tfdebias reproduce damcar`: bad arguments exit 2 with one line, before any work."""

import pytest

from tfdebias import cli


@pytest.mark.parametrize("extra, needle", [
    (["--lambda1", "-1"], "--lambda1"),
    (["--data", "no_such_data"], "no_such_data"),
    (["--stopping", "snips"], "--stopping snips"),
])
def test_bad_arguments_exit_2_with_one_line(extra, needle, capsys, tmp_path, data_dir):
    argv = ["reproduce", "damcar", "--quick", "--out", str(tmp_path / "o")]
    if "--data" not in extra:
        argv += ["--data", "cascade_exposure"]
    assert cli.main(argv + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfdebias: error:") and needle in err[0]
    assert not (tmp_path / "o").exists()


def test_a_walk_radius_below_one_is_refused_by_the_parser(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "damcar", "--quick", "--radius", "0", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "argument --radius: expected an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_ranker_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "damcar", "--ranker", "lr"])
    assert e.value.code == 2


def test_search_space_is_registered_as_data():
    from tfdebias.methods import damcar
    from tfdebias.tuning import get_space

    space = get_space("damcar")
    assert sorted(space) == ["lambda1", "lambda2", "lambda3"]
    assert sorted(space["lambda1"]) == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert sorted(space["lambda3"]) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert space == damcar.SEARCH_SPACE
