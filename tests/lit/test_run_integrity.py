"""Run integrity through the CLI: a refused resume writes nothing, a foreign checkpoint is refused, ``best`` is the
recorded one, bad input is one message, versions are allocated atomically, and a full disk loses no checkpoint."""

from __future__ import annotations

import errno
import multiprocessing
import threading
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace

from tapa_lab.cli import run_lightning
from tapa_lab.errors import ConfigError
from tapa_lab.eval.load import resolve_checkpoint
from tapa_lab.lit import checkpoint_io
from tapa_lab.lit.checkpoint_io import AtomicCheckpointIO, DiskFullError
from tapa_lab.lit.resume import check_model, run_identity
from tapa_lab.lit.run_folder import allocate_version, pin_run_folder


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fit(fixture_run: list[str], *extra: str) -> None:
    run_lightning(["fit", *fixture_run, *extra])


@pytest.mark.slow
def test_refused_resume_leaves_the_run_byte_identical_and_resume_still_works(in_tmp, fixture_run, scalars):
    fit(fixture_run, "--trainer.max_steps", "4", "--model.posenc", "tapa_lab.posenc.RoPE")
    run = in_tmp / "checkpoints" / "RoPE" / "version_0"
    before = snapshot(run)
    with pytest.raises(ConfigError, match="data.seq_len = 16"):
        run_lightning(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--data.seq_len", "16"])
    assert snapshot(run) == before
    run_lightning(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--trainer.max_steps", "6"])
    assert sorted(scalars(run, "train/loss")) == list(range(6))
    assert (run / "config.yaml").read_bytes() == before["config.yaml"]
    assert "max_steps: 6" in (run / "config.resume-1.yaml").read_text()
    record = (run / "run_record_fit.json").read_text()
    assert record.startswith(before["run_record_fit.json"].decode()[:200]) and '"resumes"' in record


@pytest.mark.slow
@pytest.mark.parametrize("override,named", [
    (["--model.posenc", "tapa_lab.posenc.NoPE"], ["NoPE", "RoPE"]),
    (["--model.posenc", "tapa_lab.posenc.RoPE", "--model.architecture.d_model", "64"], ["model.architecture", "64"]),
])
def test_resume_refuses_a_checkpoint_of_another_model_naming_both(override, named, in_tmp, fixture_run):
    fit(fixture_run, "--trainer.max_steps", "2", "--model.posenc", "tapa_lab.posenc.RoPE")
    ckpt = in_tmp / "checkpoints" / "RoPE" / "version_0" / "checkpoints" / "last.ckpt"
    runs_before = sorted(p.relative_to(in_tmp) for p in (in_tmp / "checkpoints").rglob("*"))
    with pytest.raises(ConfigError) as error:
        fit(fixture_run, "--trainer.max_steps", "4", *override, "--ckpt_path", str(ckpt),
            "--trainer.logger.init_args.name", "other")
    message = str(error.value)
    assert all(word in message for word in named) and "model.init_from" in message, message
    assert sorted(p.relative_to(in_tmp) for p in (in_tmp / "checkpoints").rglob("*")) == [*runs_before,
                                                                                            Path("checkpoints/other")]


def test_resume_identity_ignores_arguments_added_since_the_checkpoint_but_not_changed_ones(tmp_path):
    model = torch.nn.Linear(2, 2)
    current = run_identity({"posenc": {"class_path": "tapa_lab.posenc.RoPE", "init_args": {
        "base": 10000.0, "rotary_fraction": 1.0, "backend": "torch"}}, "architecture": {"d_model": 32}})
    older = {"model.posenc": {"class_path": "tapa_lab.posenc.RoPE", "init_args": {"base": 10000.0}},
             "model.architecture": {}}
    check_model(tmp_path / "old.ckpt", {"state_dict": model.state_dict(), "callbacks": {"RunIdentity": older}},
                current, model)
    changed = {**older, "model.posenc": {"class_path": "tapa_lab.posenc.RoPE", "init_args": {"base": 5e5}}}
    with pytest.raises(ConfigError, match=r"RoPE\(base=500000.0\) in the checkpoint but RoPE\(base=10000.0, "):
        check_model(tmp_path / "old.ckpt", {"state_dict": model.state_dict(), "callbacks": {"RunIdentity": changed}},
                    current, model)


def test_max_steps_zero_is_a_clear_error_and_makes_no_run_folder(in_tmp, fixture_run):
    with pytest.raises(ConfigError, match="trainer.max_steps"):
        fit(fixture_run, "--trainer.max_steps", "0")
    assert not (in_tmp / "checkpoints").exists()


def test_a_data_error_leaves_no_run_folder(in_tmp, fixture_run):
    with pytest.raises(ConfigError, match="data.seq_len"):
        fit(fixture_run, "--trainer.max_steps", "2", "--data.seq_len", "100000", "--model.posenc",
            "tapa_lab.posenc.NoPE")
    assert list((in_tmp / "checkpoints" / "NoPE").iterdir()) == []


def test_parse_error_is_printed_first_with_a_help_hint(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_lightning(["fit", "--data.seq_len", "abc"])
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "LightningCLI's args" not in line]
    assert err[0].startswith("tapa-lab: error:") and "data.seq_len" in err[0]
    assert len(err) <= 4 and "--help" in err[-1]


def test_yaml_syntax_error_names_the_config_file(in_tmp):
    (in_tmp / "broken.yaml").write_text("data:\n  seq_len: [1,\n")
    with pytest.raises(ConfigError, match=r"--config broken.yaml is not valid YAML at line 3"):
        run_lightning(["fit", "--config", "broken.yaml"])


@pytest.mark.slow
def test_eval_best_is_the_recorded_checkpoint_not_the_newest_file(in_tmp, fixture_run):
    fit(fixture_run, "--trainer.max_steps", "12", "--model.posenc", "tapa_lab.posenc.NoPE")
    run = in_tmp / "checkpoints" / "NoPE" / "version_0"
    (run / "checkpoints" / "best-999.ckpt").write_bytes(b"stray, newer, truncated")
    assert resolve_checkpoint(run, "best") == run / "checkpoints" / "best-10.ckpt"
    config = (run / "config.yaml").read_bytes()
    cli = run_lightning(["test", "--config", str(run / "config.yaml"), "--ckpt_path", "best"])
    assert cli.config["test"].ckpt_path.endswith("best-10.ckpt")
    assert (run / "config.yaml").read_bytes() == config and (run / "config.test-1.yaml").is_file()
    recorded = run / "checkpoints" / "best-10.ckpt"
    recorded.write_bytes(recorded.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="best-10.ckpt"):
        resolve_checkpoint(run, "best")


def test_concurrent_runs_with_one_logger_name_get_distinct_versions(in_tmp):
    def config() -> Namespace:
        logger = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                           init_args=Namespace(save_dir="checkpoints", name="same", version=None))
        return Namespace(trainer=Namespace(logger=logger), model=Namespace(posenc=Namespace(class_path="x.RoPE")))

    barrier, folders = threading.Barrier(8), []

    def start() -> None:
        barrier.wait()
        folders.append(pin_run_folder(config(), create=True))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(folders)) == 8 and all(folder.is_dir() for folder in folders)


def _allocate_after(barrier, base: Path, results) -> None:
    barrier.wait()
    results.put(allocate_version(base))


def test_concurrent_processes_allocate_distinct_versions(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_allocate_after, args=(barrier, tmp_path / "same", results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    versions = sorted(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join()
    assert versions == [0, 1, 2, 3]


def failing_save(fail_from_call: int):
    """A ``torch.save`` that writes some bytes and then fails with ENOSPC from the given call on."""
    real_save, calls = torch.save, []

    def save(obj, file, *args, **kwargs):
        calls.append(file)
        if len(calls) < fail_from_call:
            return real_save(obj, file, *args, **kwargs)
        file.write(b"partial checkpoint bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_full_disk_keeps_the_old_checkpoint_and_says_where(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    monkeypatch.setattr(checkpoint_io.torch, "save", failing_save(1))
    with pytest.raises(DiskFullError, match=rf"in {tmp_path} \(\d+\.\d MiB free\)"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_full_disk_during_fit_is_one_error_and_earlier_checkpoints_load(in_tmp, fixture_run, monkeypatch):
    monkeypatch.setattr(checkpoint_io.torch, "save", failing_save(3))  # step 10: best and last; then the end
    with pytest.raises(DiskFullError, match="no space left to save checkpoint"):
        fit(fixture_run, "--trainer.max_steps", "12", "--model.posenc", "tapa_lab.posenc.NoPE")
    monkeypatch.undo()
    folder = in_tmp / "checkpoints" / "NoPE" / "version_0" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-10.ckpt", "last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 10
    assert torch.load(folder / "best-10.ckpt", weights_only=False)["global_step"] == 10
