"""What qsearch writes for users: atomic, with the permissions the umask gives (as `open()` and
`mkdir()` would), not tempfile's private 0600/0700; and the file digests it keys caches by."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import optuna
import pytest

from search.config import QuantConfig
from search.files import atomic_write, temp_dir


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_atomic_write_gets_the_mode_open_would_give(tmp_path):
    for umask, expected in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            with atomic_write(tmp_path / "report.html") as f:
                f.write("<html>")
            with open(tmp_path / "plain.html", "w") as f:  # what the user expects
                f.write("<html>")
            folder = temp_dir(tmp_path, prefix=".work-")
        finally:
            os.umask(old)
        assert mode(tmp_path / "report.html") == mode(tmp_path / "plain.html") == expected
        assert mode(folder) == 0o777 & ~umask
        for path in (tmp_path / "report.html", tmp_path / "plain.html", folder):
            path.rmdir() if path.is_dir() else path.unlink()


def test_an_atomic_write_replaces_the_file_whole_or_not_at_all(tmp_path):
    path = tmp_path / "ranges.npz"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path, "wb") as f:
        f.write(b"half of the new")
        raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"old"
    with atomic_write(path, "wb") as f:
        f.write(b"new")
        assert path.read_bytes() == b"old"  # not yet: the rename comes at the end
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranges.npz"]  # no temporary left


def test_a_report_is_readable_by_others_under_umask_022(tmp_path, umask_022):
    from search.report import write_report
    from tests.test_report import synthetic_study

    study, _ = synthetic_study()
    path = write_report(study, tmp_path / "reports" / "study.html")
    assert mode(path) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["study.html"]


def test_an_export_is_readable_by_others_under_umask_022(tiny_task, tmp_path, umask_022):
    from search.export import export_trial

    config = QuantConfig(operators=("MatMul",))
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.add_trial(
        optuna.trial.create_trial(values=[0.5, 1.2], user_attrs={"config": config.to_dict()})
    )
    out = tmp_path / "exports" / "best"
    export_trial(study, study.trials[0], tiny_task, out)
    assert mode(out) == 0o755
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"model.onnx", "README.md", "qsearch_session.json"} <= {p.name for p in files}
    assert {p.name: mode(p) for p in files} == {p.name: 0o644 for p in files}
    assert sorted(p.name for p in out.parent.iterdir()) == ["best"]  # no work folder left


def test_cached_calibration_ranges_and_a_built_task_get_the_umask_s_mode(
    tiny_task, tiny_task_dir, tmp_path, umask_022
):
    from search.calibrate import CalibrationCache

    cache = CalibrationCache(tiny_task, directory=tmp_path / "calibration")
    config = QuantConfig(mode="static", format="QDQ", operators=("MatMul",))
    cache.ranges(config)
    assert [mode(p) for p in (tmp_path / "calibration").iterdir()] == [0o644]
    # the tiny task was built (temporary folder, then renamed) under the session's umask
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode(Path(tiny_task_dir)) == 0o777 & ~umask


@pytest.fixture
def big_file(tmp_path) -> Path:
    """Larger than any read buffer and not a multiple of one."""
    path = tmp_path / "weights.safetensors"
    path.write_bytes(os.urandom(3 * (1 << 20) + 7))
    return path


def test_file_digests_are_sha256_of_the_bytes(big_file):
    from search.model_files import file_digest, file_sha256

    data = big_file.read_bytes()
    assert file_sha256(big_file) == hashlib.sha256(data).hexdigest()
    assert file_digest(big_file) == hashlib.sha256(data).hexdigest()[:16]


def test_an_exported_model_s_cache_folder_is_named_by_the_same_digest(
    big_file, tmp_path, monkeypatch
):
    """The cache key of a Hugging Face folder's ONNX export: config, then each weights
    file's name, size and bytes, in one SHA-256 (a changed key would export it again)."""
    from search.tasks.custom import _export_hf

    home = tmp_path / "home"
    monkeypatch.setenv("QSEARCH_HOME", str(home))
    folder = big_file.parent
    config = {"architectures": ["BertForSequenceClassification"]}
    (folder / "config.json").write_text(json.dumps(config))
    second = folder / "more.bin"
    second.write_bytes(b"\x00" * 1000)
    expected = hashlib.sha256((folder / "config.json").read_bytes())
    for file in (big_file, second):  # *.safetensors, then *.bin
        expected.update(file.name.encode())
        expected.update(str(file.stat().st_size).encode())
        expected.update(file.read_bytes())
    target = home / "models" / expected.hexdigest()[:16]
    target.mkdir(parents=True)
    (target / "model.onnx").write_bytes(b"cached")  # found: no export is attempted
    assert _export_hf(folder, config) == target
