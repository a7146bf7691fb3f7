"""Validation at several lengths (``data.val_multiples``) and intra-document masking (``data.document_mask``) through
the CLI on the committed fixture: the tags are logged, bad values name the field, a masked fit trains."""

from __future__ import annotations

import pytest
import torch

from tapa_lab.__main__ import main
from tapa_lab.cli import run_lightning
from tapa_lab.data import Fixture
from tapa_lab.data.document_ids import document_ids
from tapa_lab.errors import ConfigError
from tapa_lab.lit.datamodule import TextDataModule


@pytest.mark.slow
def test_fit_with_val_multiples_and_document_mask_logs_every_length_and_resumes_exactly(in_tmp, fixture_run, scalars):
    """12 steps with a snapshot at step 6 and validation at step 10; a run resumed from the snapshot repeats steps
    7-12 and the validation exactly (validation at 2x and masked batches consume nothing of the training stream)."""
    snapshot = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                "--trainer.callbacks.dirpath", str(in_tmp / "snapshots"),
                "--trainer.callbacks.every_n_train_steps", "6", "--trainer.callbacks.save_top_k", "-1"]
    common = [*fixture_run, "--trainer.max_steps", "12", "--model.posenc", "tapa_lab.posenc.ALiBi",
              "--model.posenc.backend", "torch", "--data.val_multiples", "[1, 2]", "--data.val_windows_long", "3",
              "--data.document_mask", "true"]
    run_lightning(["fit", *common, *snapshot])
    (step6,) = (in_tmp / "snapshots").glob("*step=6*.ckpt")
    run_lightning(["fit", *common, "--ckpt_path", str(step6)])
    full, resumed = (in_tmp / "checkpoints" / "ALiBi" / f"version_{n}" for n in (0, 1))
    one, two, usual = (scalars(full, tag) for tag in ("val/loss@1x", "val/loss@2x", "val/loss"))
    assert sorted(two) == sorted(one) == sorted(usual) == [9]
    assert one == usual and 0 < two[9] < 10 and two[9] != one[9]
    assert not any("dataloader_idx" in tag for tag in _tags(full))
    train_full, train_resumed = scalars(full, "train/loss"), scalars(resumed, "train/loss")
    assert sorted(train_resumed) == list(range(6, 12))
    for step in range(6, 12):
        assert train_resumed[step] == pytest.approx(train_full[step], rel=1e-6, abs=1e-6), step
    assert scalars(resumed, "val/loss@2x")[9] == pytest.approx(two[9], rel=1e-6)


def _tags(run) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = []
    for events in run.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags += accumulator.Tags()["scalars"]
    return tags


@pytest.mark.parametrize("value,message", [("[0]", "data.val_multiples = [0] is not allowed"),
                                           ("[1, 4096]", "data.val_multiples = [1, 4096]: windows of [4096]")])
def test_bad_val_multiples_is_one_clear_message(value, message, in_tmp, fixture_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *fixture_run, "--trainer.max_steps", "1", "--data.val_multiples", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_default_val_multiples_keeps_one_loader_and_the_old_tags(tmp_path):
    datamodule = TextDataModule(corpus=Fixture(), seq_len=32, batch_size=4, val_windows=6,
                                data_dir=str(tmp_path / "data"))
    datamodule.setup("fit")
    assert isinstance(datamodule.val_dataloader(), torch.utils.data.DataLoader)
    assert datamodule.val_loss_tags() == [["val/loss"]]
    with pytest.raises(ConfigError, match="data.val_windows_long"):
        TextDataModule(val_windows_long=0)
    with pytest.raises(ConfigError, match=r"data.val_multiples = \[1, 1\] is not allowed: .* distinct integers"):
        TextDataModule(val_multiples=(1, 1))


def test_long_validation_windows_lie_inside_one_document(tmp_path):
    datamodule = TextDataModule(corpus=Fixture(), seq_len=16, batch_size=4, val_windows=6,
                                data_dir=str(tmp_path / "data"), val_multiples=(1, 3), val_windows_long=5)
    datamodule.setup("fit")
    usual, long = datamodule.val_dataloader()
    assert datamodule.val_loss_tags() == [["val/loss", "val/loss@1x"], ["val/loss@3x"]]
    batch = next(iter(long))
    assert batch.shape == (1, 3 * 16 + 1)
    eod = datamodule.tokenizer.eod_id
    assert all(not (window == eod).any() for window in long.dataset)
    assert len(long.dataset) == 5


def test_document_ids_count_earlier_end_of_document_tokens():
    tokens = torch.tensor([[5, 9, 2, 9, 9, 7], [9, 1, 1, 1, 1, 9]])
    assert document_ids(tokens, eod_id=9).tolist() == [[0, 0, 1, 1, 2, 3], [0, 1, 1, 1, 1, 1]]


def test_document_mask_batches_carry_the_ids_of_their_tokens(tmp_path):
    datamodule = TextDataModule(corpus=Fixture(), seq_len=32, batch_size=4, val_windows=6,
                                data_dir=str(tmp_path / "data"), document_mask=True)
    datamodule.setup("fit")
    eod = datamodule.tokenizer.eod_id
    for tokens, ids in (next(iter(datamodule.train_dataloader())), next(iter(datamodule.val_dataloader()))):
        assert tokens.shape == ids.shape == (4, 33)
        assert torch.equal(ids, document_ids(tokens, eod))
