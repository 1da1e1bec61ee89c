"""TensorFlow's CPU thread pools: the policy, what a fresh process gets, bad values."""

import json
import os
import subprocess
import sys

import pytest

from tfdebias.cli import main
from tfdebias.errors import UsageError
from tfdebias.training.threads import auto_sizes, parse_policy


@pytest.mark.parametrize("value,expected", [
    ("auto", "auto"), (" Auto ", "auto"), ("tensorflow", "tensorflow"),
    ("2,1", (2, 1)), (" 4 , 8 ", (4, 8)), ((3, 2), (3, 2)),
])
def test_parse_policy(value, expected):
    assert parse_policy(value) == expected


@pytest.mark.parametrize("value", ["", "fast", "2", "2,0", "-1,2", "a,b", "1,2,3", None, 4])
def test_parse_policy_rejects(value):
    with pytest.raises(UsageError, match="cpu_threads must be"):
        parse_policy(value)


@pytest.mark.parametrize("cores,gpu,expected", [
    (1, False, (1, 1)), (2, False, (2, 1)), (3, False, (2, 1)), (4, False, (2, 2)),
    (16, False, (2, 8)), (16, True, None),
])
def test_auto_sizes(cores, gpu, expected):
    assert auto_sizes(cores, gpu) == expected


PROBE = """
import json, sys
import tensorflow as tf
from tfdebias.training.threads import configure_cpu_threads as configure
if sys.argv[2] == "late":
    tf.constant(1.0) + 1.0  # starts the runtime
first = configure(sys.argv[1])
again = configure("9,9")  # the first call decides
tf.constant(1.0) + 1.0
print(json.dumps({"first": first.__dict__, "again": again.__dict__,
                  "inter": tf.config.threading.get_inter_op_parallelism_threads(),
                  "intra": tf.config.threading.get_intra_op_parallelism_threads(),
                  "cores": len(__import__("os").sched_getaffinity(0))}))
"""


def probe(policy, when="early", env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TF_NUM_")}
    p = subprocess.run([sys.executable, "-c", PROBE, policy, when], capture_output=True,
                       text=True, timeout=300, env={**environ, "CUDA_VISIBLE_DEVICES": "",
                                                    **(env or {})})
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fresh_process_gets_the_pools():
    got = probe("auto")
    assert (got["inter"], got["intra"]) == auto_sizes(got["cores"], False)
    assert got["first"]["applied"] and got["again"] == got["first"]
    got = probe("3,2")
    assert (got["inter"], got["intra"]) == (3, 2) and got["first"]["reason"] == "as given"


@pytest.mark.slow
def test_tensorflow_policy_and_env_variables_are_left_alone():
    got = probe("tensorflow")
    assert (got["inter"], got["intra"]) == (0, 0) and not got["first"]["applied"]
    got = probe("auto", env={"TF_NUM_INTRAOP_THREADS": "2"})
    assert got["inter"] == auto_sizes(got["cores"], False)[0]
    assert got["intra"] == 0  # the variable's size, which TF applies itself


@pytest.mark.slow
def test_too_late_changes_nothing():
    got = probe("2,1", when="late")
    assert not got["first"]["applied"] and "already started" in got["first"]["reason"]
    assert (got["inter"], got["intra"]) == (0, 0)


def test_cli_rejects_a_bad_policy(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--cpu-threads", "fast", "datasets", "list"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--cpu-threads" in err and "'fast'" in err and "Traceback" not in err
