"""`qsearch cache`: what is kept under $QSEARCH_HOME, listed and cleared by name."""

from search.caches import caches
from search.config import QuantConfig
from search.quantize import quantize
from tests.conftest import invoke


def test_a_quantization_fills_the_inferred_cache_and_clearing_it_removes_only_it(
    tiny_task, tmp_path, monkeypatch
):
    home = tmp_path / "home"
    monkeypatch.setenv("QSEARCH_HOME", str(home))
    (home / "calibration").mkdir(parents=True)
    (home / "calibration" / "ranges.npz").write_bytes(b"x" * 5000)
    quantize(QuantConfig(operators=("MatMul",)), tiny_task.model_path, tmp_path / "q")
    by_name = {c.name: c for c in caches()}
    model_bytes = tiny_task.model_path.stat().st_size
    assert len(by_name["inferred"].files()) == 1  # the dynamic copy (its Gemm rewritten)
    assert by_name["inferred"].size() > model_bytes
    listed = invoke("cache")
    assert listed.exit_code == 0, listed.output
    assert "inferred" in listed.output and "5.0 KB" in listed.output  # calibration's file

    cleared = invoke("cache", "--clear", "inferred")
    assert cleared.exit_code == 0, cleared.output
    assert "cleared inferred" in cleared.output
    assert not (home / "inferred").exists() and (home / "calibration" / "ranges.npz").exists()
    # a later quantization makes its copy again
    quantize(QuantConfig(operators=("MatMul",)), tiny_task.model_path, tmp_path / "again")
    assert len({c.name: c for c in caches()}["inferred"].files()) == 1


def test_an_unknown_cache_name_is_refused_before_anything_is_removed(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("QSEARCH_HOME", str(home))
    (home / "calibration").mkdir(parents=True)
    (home / "calibration" / "ranges.npz").write_bytes(b"x")
    result = invoke("cache", "--clear", "calibration", "--clear", "weights")
    assert result.exit_code == 2
    assert "--clear must name caches of" in result.output and "'weights'" in result.output
    assert "Traceback" not in result.output
    assert (home / "calibration" / "ranges.npz").exists()
    everything = invoke("cache", "--clear", "all")
    assert everything.exit_code == 0 and not (home / "calibration").exists()
