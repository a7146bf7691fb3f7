"""TextDataModule: batches, errors naming the field, the YAML/CLI surface, and exact resume with Lightning."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from tapa_lab.data import BPETokenizer, ByteTokenizer, Fixture, Shakespeare
from tapa_lab.errors import ConfigError
from tapa_lab.lit.datamodule import TextDataModule


def make(data_dir: Path, **kwargs) -> TextDataModule:
    options = {"corpus": Fixture(), "seq_len": 32, "batch_size": 4, "val_windows": 6, "data_dir": str(data_dir),
               "seed": 3}
    return TextDataModule(**(options | kwargs))


def test_defaults_and_vocab_size_are_known_right_after_construction():
    datamodule = TextDataModule()
    assert isinstance(datamodule.corpus, Shakespeare) and isinstance(datamodule.tokenizer, ByteTokenizer)
    assert datamodule.vocab_size == 258
    assert TextDataModule(tokenizer=BPETokenizer(vocab_size=1024)).vocab_size == 1024


def test_batches_are_long_tensors_of_seq_len_plus_one(data_dir):
    datamodule = make(data_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    train = next(iter(datamodule.train_dataloader()))
    assert train.shape == (4, 33) and train.dtype == torch.int64
    val_batches = list(datamodule.val_dataloader())
    assert [batch.shape for batch in val_batches] == [(4, 33), (2, 33)]
    assert all(torch.equal(a, b) for a, b in zip(val_batches, datamodule.val_dataloader(), strict=True))
    datamodule.setup("test")
    assert next(iter(datamodule.test_dataloader())).shape == (4, 33)
    assert len(datamodule.manifest_hash) == 64
    assert sum(len(doc) for doc in datamodule.documents("train")) + len(datamodule.documents("train")) == len(
        datamodule.packed.tokens("train"))
    record = datamodule.provenance()
    assert record["manifest_hash"] == datamodule.manifest_hash and record["splits"]["train"]["documents"] == 9


def test_config_errors_name_the_field_and_the_limit(data_dir):
    with pytest.raises(ConfigError, match="data.seq_len = 0 is not allowed"):
        make(data_dir, seq_len=0)
    with pytest.raises(ConfigError, match="data.batch_size"):
        make(data_dir, batch_size=0)
    with pytest.raises(ConfigError, match="data.val_windows"):
        make(data_dir, val_windows=0)
    datamodule = make(data_dir, seq_len=5000)
    with pytest.raises(ConfigError, match=r"data.seq_len = 5000 but the validation split has only \d+ tokens; lower "
                                          "seq_len or use a larger corpus"):
        datamodule.setup("fit")
    with pytest.raises(ConfigError, match="data.seq_len = 5000 but the test split"):
        datamodule.setup("test")
    datamodule = make(data_dir, seq_len=1000, batch_size=64)
    datamodule.setup("fit")
    with pytest.raises(ConfigError, match="data.batch_size = 64"):
        datamodule.train_dataloader()


class TinyLM(L.LightningModule):
    """A bigram model that records every batch it trains on."""

    def __init__(self, vocab_size: int = 10) -> None:
        super().__init__()
        self.logits = torch.nn.Embedding(vocab_size, vocab_size)
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.clone())
        logits = self.logits(batch[:, :-1])
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", self.training_step(batch, batch_idx) * 0)
        self.seen.pop()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class LinkedCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")


def test_yaml_selects_the_corpus_by_class_path_and_links_vocab_size(tmp_path):
    config = {"data": {"corpus": {"class_path": "tapa_lab.data.Fixture"},
                       "tokenizer": {"class_path": "tapa_lab.data.ByteTokenizer"},
                       "seq_len": 16, "data_dir": str(tmp_path / "data")},
              "trainer": {"logger": False, "enable_checkpointing": False, "max_steps": 1}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = LinkedCLI(TinyLM, TextDataModule, run=False, args=["--config", str(path)])
    assert isinstance(cli.datamodule.corpus, Fixture) and cli.datamodule.seq_len == 16
    assert cli.model.logits.num_embeddings == 258
    local = LinkedCLI(TinyLM, TextDataModule, run=False, args=[
        "--data.corpus=tapa_lab.data.LocalFiles", "--data.corpus.paths=[a.txt, b/*.jsonl]",
        "--data.corpus.text_field=body", "--trainer.logger=false"])
    assert local.datamodule.corpus.paths == ["a.txt", "b/*.jsonl"] and local.datamodule.corpus.text_field == "body"


def fit(data_dir: Path, max_steps: int, accumulate: int, ckpt_path: str | None = None,
        save_to: Path | None = None, seed: int = 3, callbacks: list | None = None, max_epochs: int | None = None,
        seq_len: int = 32) -> list[torch.Tensor]:
    """Train TinyLM on the fixture (validating every 2 batches); return the training batches it saw."""
    model = TinyLM(vocab_size=258)
    trainer = L.Trainer(max_steps=max_steps, max_epochs=max_epochs, accumulate_grad_batches=accumulate, logger=False,
                        enable_checkpointing=callbacks is not None, callbacks=callbacks, enable_progress_bar=False,
                        enable_model_summary=False, val_check_interval=2, limit_val_batches=1,
                        num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(model, datamodule=make(data_dir, seed=seed, seq_len=seq_len), ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return model.seen


@pytest.mark.parametrize("accumulate", [1, 2])
def test_resuming_from_a_checkpoint_sees_the_same_batches_as_an_uninterrupted_run(data_dir, tmp_path, accumulate):
    uninterrupted = fit(data_dir, max_steps=6, accumulate=accumulate)
    first_half = fit(data_dir, max_steps=3, accumulate=accumulate, save_to=tmp_path / "half.ckpt")
    second_half = fit(data_dir, max_steps=6, accumulate=accumulate, ckpt_path=str(tmp_path / "half.ckpt"))
    assert len(uninterrupted) == 6 * accumulate
    assert len(first_half) + len(second_half) == len(uninterrupted)
    assert all(torch.equal(a, b) for a, b in zip(first_half + second_half, uninterrupted, strict=True))


def test_resuming_from_a_mid_run_checkpoint_continues_the_stream(data_dir, tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    uninterrupted = fit(data_dir, max_steps=6, accumulate=2, callbacks=[checkpoints])
    resumed = fit(data_dir, max_steps=6, accumulate=2, ckpt_path=str(tmp_path / "ckpt" / "step=2.ckpt"))
    assert len(resumed) == 8
    assert all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted[4:], strict=True))


def test_epoch_based_training_draws_new_windows_each_epoch_and_resumes_inside_one(data_dir, tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="{step}")
    uninterrupted = fit(data_dir, max_steps=-1, max_epochs=2, accumulate=1, seq_len=512, callbacks=[checkpoints])
    per_epoch = len(uninterrupted) // 2
    assert per_epoch == 17  # (36,775 training tokens // 512) windows, rounded down to whole batches of 4
    assert not any(torch.equal(a, b) for a, b in zip(uninterrupted[:per_epoch], uninterrupted[per_epoch:],
                                                     strict=True))
    for step in (6, 21):
        resumed = fit(data_dir, max_steps=-1, max_epochs=2, accumulate=1, seq_len=512,
                      ckpt_path=str(tmp_path / "ckpt" / f"step={step}.ckpt"))
        assert all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted[step:], strict=True))


def test_resuming_with_another_stream_is_refused(data_dir, tmp_path):
    fit(data_dir, max_steps=2, accumulate=1, save_to=tmp_path / "run.ckpt")
    with pytest.raises(ConfigError, match=r"data.seed = 4 \(the checkpoint has 3\)"):
        fit(data_dir, max_steps=4, accumulate=1, ckpt_path=str(tmp_path / "run.ckpt"), seed=4)
