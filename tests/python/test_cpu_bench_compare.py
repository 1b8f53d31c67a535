"""python -m hpc_ops.bench.compare (A/B tables of benchmark result files), no
GPU needed: each build's time is its fastest round, changes are against the
first tag, baselines are ignored, a failed check marks the time and makes the
exit status 1, a case one build lacks shows "-", and a bad argument is
rejected with status 2; and the --ours-only option of the benchmark."""
import json

import pytest

from hpc_ops.bench import compare


def _write(path, records):
    path.write_text(json.dumps({"family": "rope", "meta": {}, "records": records}))
    return str(path)


def _rec(case, t, pct=80.0, check="ok", baseline=False):
    op, shape = case.split(" ", 1)
    return {"op": op, "shape": shape, "impl": "torch" if baseline else "hpc_ops",
            "baseline": baseline, "time_us": t, "pct_ceiling": pct, "check": check}


def test_fastest_round_and_change_against_the_base(tmp_path, capsys):
    a1 = _write(tmp_path / "a1.json", [_rec("rope_bf16 q 1x16K", 175.0, 82.0),
                                       _rec("rope_bf16 q 1x16K", 3000.0, baseline=True),
                                       _rec("rope_fp8 q 1x16K", 169.0)])
    a2 = _write(tmp_path / "a2.json", [_rec("rope_bf16 q 1x16K", 170.0, 84.5),
                                       _rec("rope_fp8 q 1x16K", 171.0)])
    b1 = _write(tmp_path / "b1.json", [_rec("rope_bf16 q 1x16K", 153.0, 93.0),
                                       _rec("rope_fp8 q 1x16K", 169.0)])
    assert compare.main([f"old={a1}", f"old={a2}", f"new={b1}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["case", "old", "new"]
    bf16 = next(line for line in lines if line.startswith("rope_bf16"))
    # old: the fastest of its two rounds (170.0, with that round's 84.5%);
    # new: -10.0% against it; the torch baseline (3000 us) is not a build.
    assert bf16.split()[3:] == ["170.00", "84.5%", "153.00", "-10.0%", "93.0%"]
    fp8 = next(line for line in lines if line.startswith("rope_fp8"))
    assert fp8.split()[3:] == ["169.00", "80.0%", "169.00", "+0.0%", "80.0%"]


def test_failed_check_and_missing_case(tmp_path, capsys):
    a = _write(tmp_path / "a.json", [_rec("rope_bf16 q 1x16K", 175.0),
                                     _rec("rope_bf16 q B=1", 2.8)])
    b = _write(tmp_path / "b.json", [_rec("rope_bf16 q 1x16K", 170.0, check="FAIL")])
    assert compare.main([f"a={a}", f"b={b}"]) == 1
    out = capsys.readouterr().out
    assert "170.00!" in out
    missing = next(line for line in out.splitlines() if line.startswith("rope_bf16 q B=1"))
    assert missing.split()[-1] == "-"


def test_nan_time_and_fastest_round_keep_the_failure(tmp_path):
    a = _write(tmp_path / "a.json", [_rec("x y", None)])
    b1 = _write(tmp_path / "b1.json", [_rec("x y", 10.0, check="FAIL")])
    b2 = _write(tmp_path / "b2.json", [_rec("x y", 12.0)])
    tags, table = compare.merge([("a", compare.load(a)), ("b", compare.load(b1)),
                                 ("b", compare.load(b2))])
    assert tags == ["a", "b"]
    assert table["x y"]["b"].time_us == 10.0 and not table["x y"]["b"].ok
    assert compare.format_table(tags, table).splitlines()[2].split()[2] == "-"  # a's cell


@pytest.mark.parametrize("spec", ["no_equals.json", "=a.json", "tag="])
def test_bad_argument(spec, capsys):
    assert compare.main([spec]) == 2
    assert "expected TAG=FILE.json" in capsys.readouterr().err


def test_ours_only_option():
    """--ours-only reaches the runner, which then times hpc_ops alone."""
    from hpc_ops.bench import __main__ as cli
    from hpc_ops.bench import runner
    from hpc_ops.bench.common import Impl

    assert cli.parse_args(["rope", "--ours-only"]).ours_only
    assert not cli.parse_args(["rope"]).ours_only
    impls = [Impl("hpc_ops", None, baseline=False), Impl("torch", None),
             Impl("torch.compile", None)]

    def names(**kw):
        ctx = runner.Context(quick=True, ceiling_tbps=4.0, l2_bytes=1, sm_count=1, reps=1,
                             rounds=1, deadline=0.0, **kw)
        return [i.name for i in runner.select_impls(impls, ctx)]

    assert names() == ["hpc_ops", "torch", "torch.compile"]
    assert names(compile_baselines=False) == ["hpc_ops", "torch"]
    assert names(baselines=False) == ["hpc_ops"]
