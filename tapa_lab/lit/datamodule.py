"""TextDataModule: a corpus recipe and a tokenizer turned into batches of fixed-length token windows.

    corpus recipe -> documents (data/<corpus>/) -> split by id hash -> tokenizer -> packed tokens per split (cached)
    train: a resumable stream of windows at starts drawn from (seed, sample id)   -> (B, seq_len + 1) int64
    validation / test: fixed windows spread evenly over the split                 -> (B, seq_len + 1) int64
    validation at m x seq_len (``val_multiples``): fixed windows inside single documents  -> (B', m seq_len + 1)
    with ``document_mask``: each train/validation/test batch is ``(tokens, document_ids)``, both (B, seq_len + 1)

A batch holds ``seq_len + 1`` tokens per row: inputs are ``batch[:, :-1]``, targets ``batch[:, 1:]``.

Exact resume: the training set is one long stream whose sample ``i`` depends on ``(seed, i)`` only. With
``trainer.max_steps > 0`` the stream has ``max_steps * batch_size * accumulate_grad_batches`` samples per rank (one
epoch); otherwise an epoch is one pass over the training tokens (``n_tokens // seq_len`` windows). Lightning restores
``global_step`` before it asks for the train dataloader, which then starts after the
``global_step * batch_size * accumulate_grad_batches`` samples already consumed, so ``fit --ckpt_path last`` sees the
same batches as an uninterrupted run.
"""

from __future__ import annotations

import os

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tapa_lab.data.corpus import Corpus
from tapa_lab.data.document_ids import WithDocumentIds
from tapa_lab.data.eval_windows import DocumentWindows, EvalWindows
from tapa_lab.data.packing import PackedCorpus, pack_corpus
from tapa_lab.data.passkey import Filler, PasskeyTrainWindows
from tapa_lab.data.shakespeare import Shakespeare
from tapa_lab.data.split import SPLITS, Split
from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.data.tokenizer_byte import ByteTokenizer
from tapa_lab.data.train_windows import ResumableSampler, StreamLoader, TrainWindows
from tapa_lab.errors import ConfigError, require

STAGE_SPLITS: dict[str, tuple[Split, ...]] = {
    "fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": (),
}


class TextDataModule(L.LightningDataModule):
    """Language-modelling batches ``(batch_size, seq_len + 1)`` from a corpus recipe and a tokenizer.

    Args:
        corpus: the corpus recipe (``class_path``: ``tapa_lab.data.Shakespeare``, ``PyStdlib``, ``DebDocs``,
            ``LocalFiles``, ``HubDataset``, ``Fixture``); ``None`` means ``tapa_lab.data.Shakespeare``.
        tokenizer: ``tapa_lab.data.ByteTokenizer`` or ``tapa_lab.data.BPETokenizer``; ``None`` means
            ``ByteTokenizer`` (258 ids).
        seq_len: training length in tokens (>= 1); validation and test windows have the same length.
        batch_size: windows per batch on each device (>= 1).
        val_windows: number of fixed validation windows, and of test windows (>= 1).
        num_workers: DataLoader worker processes (>= 0).
        data_dir: folder for prepared corpora, downloads and token caches.
        seed: seed of the training stream (which windows, in which order); ``None`` takes the seed of
            ``seed_everything`` (0 if none was set).
        val_fraction: expected fraction of documents in the validation split, in (0, 1).
        test_fraction: expected fraction of documents in the test split, in (0, 1).
        passkey_rate: fraction of training windows replaced by passkey-retrieval examples at the training length,
            in [0, 1] (0: plain text only); drawn from (seed, sample id), so resume stays exact. See
            :mod:`tapa_lab.data.passkey`.
        passkey_filler: filler of those examples: ``repeat`` (a fixed sentence) or ``corpus`` (training text).
        val_multiples: validation lengths as multiples of ``seq_len`` (distinct integers >= 1). Every validation logs
            ``val/loss@<m>x`` for each ``m``, from ``val_windows_long`` windows of ``m * seq_len`` tokens inside single
            validation documents (drawn like ``tapa-lab eval``'s windows; ``val/loss@1x`` is ``val/loss``, the usual
            windows); ``[1]`` (the default) logs ``val/loss`` only.
        val_windows_long: windows per multiple ``m > 1`` (>= 1; fewer when the documents hold fewer); they are
            batched ``max(1, batch_size // m)`` at a time, so a batch holds about as many tokens as a training batch
            (``trainer.limit_val_batches`` caps the batches of each length).
        document_mask: intra-document causal masking: windows carry the document id of each token (from the
            end-of-document tokens of the packed split) and the model lets a query attend only to keys of its own
            document. Applies to training, validation and test windows; batches become ``(tokens, document_ids)``.
    """

    def __init__(self, corpus: Corpus | None = None, tokenizer: Tokenizer | None = None, seq_len: int = 512,
                 batch_size: int = 16, val_windows: int = 64, num_workers: int = 0, data_dir: str = "data",
                 seed: int | None = None, val_fraction: float = 0.05, test_fraction: float = 0.05,
                 passkey_rate: float = 0.0, passkey_filler: Filler = "repeat", val_multiples: tuple[int, ...] = (1,),
                 val_windows_long: int = 8, document_mask: bool = False) -> None:
        super().__init__()
        require(seq_len >= 1, "data.seq_len", ">= 1", seq_len)
        require(batch_size >= 1, "data.batch_size", ">= 1", batch_size)
        require(val_windows >= 1, "data.val_windows", ">= 1", val_windows)
        require(num_workers >= 0, "data.num_workers", ">= 0", num_workers)
        require(seed is None or seed >= 0, "data.seed", ">= 0 or null", seed)
        require(0 < val_fraction < 1, "data.val_fraction", "in (0, 1)", val_fraction)
        require(0 < test_fraction < 1, "data.test_fraction", "in (0, 1)", test_fraction)
        require(0 <= passkey_rate <= 1, "data.passkey_rate", "in [0, 1]", passkey_rate)
        require(passkey_filler in ("repeat", "corpus"), "data.passkey_filler", "repeat or corpus", passkey_filler)
        val_multiples = tuple(val_multiples)
        require(len(val_multiples) > 0 and all(isinstance(m, int) and m >= 1 for m in val_multiples)
                and len(set(val_multiples)) == len(val_multiples), "data.val_multiples",
                "a non-empty list of distinct integers >= 1", list(val_multiples))
        require(val_windows_long >= 1, "data.val_windows_long", ">= 1", val_windows_long)
        self.corpus = corpus if corpus is not None else Shakespeare()
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.val_windows = val_windows
        self.num_workers = num_workers
        self.data_dir = data_dir
        self.seed = seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.passkey_rate = passkey_rate
        self.passkey_filler = passkey_filler
        self.val_multiples = val_multiples
        self.val_windows_long = val_windows_long
        self.document_mask = document_mask
        self._packed: PackedCorpus | None = None

    @property
    def vocab_size(self) -> int:
        """Number of token ids, from the tokenizer (available right after construction; linked to the model)."""
        return self.tokenizer.vocab_size

    @property
    def packed(self) -> PackedCorpus:
        """The token cache (after :meth:`setup`)."""
        if self._packed is None:
            raise RuntimeError("TextDataModule has no data yet: call prepare_data() and setup() first.")
        return self._packed

    @property
    def manifest_hash(self) -> str:
        """SHA-256 of the corpus content (document ids and text hashes), after :meth:`setup`."""
        return self.packed.manifest_hash

    def documents(self, split: Split) -> list[np.ndarray]:
        """Each document of ``split`` as a token array (no end-of-document), for windows inside long documents."""
        return self.packed.documents(split)

    def stream_seed(self) -> int:
        """The training stream's seed: ``seed``, else the one ``seed_everything`` set, else 0."""
        if self.seed is not None:
            return self.seed
        return int(os.environ.get("PL_GLOBAL_SEED", "0")) % 2**32

    def prepare_data(self) -> None:
        """Prepare the corpus and tokenise every split once into ``data_dir`` (one process per node)."""
        pack_corpus(self.corpus, self.tokenizer, self.data_dir, self.val_fraction, self.test_fraction)

    def setup(self, stage: str = "fit") -> None:
        """Open the token cache (building it if :meth:`prepare_data` has not) and check ``seq_len`` fits."""
        self._packed = pack_corpus(self.corpus, self.tokenizer, self.data_dir, self.val_fraction, self.test_fraction)
        for split in STAGE_SPLITS.get(stage, SPLITS):
            available = len(self._packed.tokens(split))
            if available < self.seq_len + 1:
                raise ConfigError(f"data.seq_len = {self.seq_len} but the {split} split has only {available} tokens; "
                                  "lower seq_len or use a larger corpus.")
        if "validation" in STAGE_SPLITS.get(stage, SPLITS) and self.long_multiples:
            longest = max((len(doc) for doc in self.documents("validation")), default=0)
            too_long = [m for m in self.long_multiples if m * self.seq_len + 1 > longest]
            if too_long:
                raise ConfigError(f"data.val_multiples = {list(self.val_multiples)}: windows of {too_long} x "
                                  f"data.seq_len ({self.seq_len}) are longer than every validation document (the "
                                  f"longest has {longest} tokens); lower them or use a corpus with longer documents.")

    @property
    def long_multiples(self) -> list[int]:
        """The multiples of ``val_multiples`` above 1, each with its own validation loader (after the usual one)."""
        return [m for m in self.val_multiples if m > 1]

    def val_loss_tags(self) -> list[list[str]]:
        """The loss tags each validation loader logs, in loader order: ``val/loss`` (plus ``val/loss@1x`` when
        ``val_multiples`` asks for more than 1x) for the usual windows, then ``val/loss@<m>x`` per longer multiple."""
        first = ["val/loss"] + (["val/loss@1x"] if 1 in self.val_multiples and self.long_multiples else [])
        return [first, *([f"val/loss@{m}x"] for m in self.long_multiples)]

    def train_dataset(self) -> Dataset:
        """The training stream's dataset: corpus windows, mixed with passkey examples when ``passkey_rate > 0``, with
        document ids when ``document_mask``."""
        if self.passkey_rate > 0:
            return self._with_ids(PasskeyTrainWindows(self.packed.tokens("train"), self.seq_len, self.stream_seed(),
                                                      self.tokenizer, self.passkey_rate, self.passkey_filler))
        return self._with_ids(TrainWindows(self.packed.tokens("train"), self.seq_len, self.stream_seed()))

    def train_dataloader(self) -> DataLoader:
        """The resumable training stream, starting after the samples already consumed by ``trainer.global_step``."""
        trainer = self.trainer
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        per_step = self.batch_size * accumulate
        if trainer is not None and trainer.max_steps > 0:
            samples_per_epoch = trainer.max_steps * per_step
        else:
            windows = len(self.packed.tokens("train")) // self.seq_len
            samples_per_epoch = windows // world_size // per_step * per_step
            if samples_per_epoch == 0:
                raise ConfigError(
                    f"data.batch_size = {self.batch_size} (x {accumulate} accumulated x {world_size} devices) needs "
                    f"more windows than one pass over the training split gives ({windows} of data.seq_len = "
                    f"{self.seq_len}); lower them, use a larger corpus, or set trainer.max_steps.")
        consumed = (lambda: trainer.global_step * per_step) if trainer is not None else (lambda: 0)
        sampler = ResumableSampler(samples_per_epoch, consumed, rank, world_size)
        identity = {"data.seed": self.stream_seed(), "data.seq_len": self.seq_len, "data.batch_size": self.batch_size,
                    "trainer.accumulate_grad_batches": accumulate, "corpus manifest hash": self.manifest_hash,
                    "data.passkey_rate": self.passkey_rate, "data.passkey_filler": self.passkey_filler,
                    "data.document_mask": self.document_mask}
        return StreamLoader(self.train_dataset(), identity=identity, batch_size=self.batch_size, sampler=sampler,
                            drop_last=True, **self._loader_options())

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Fixed validation windows ``(batch_size, seq_len + 1)``; with longer ``val_multiples``, a list: that loader,
        then one of in-document windows per multiple ``m > 1`` (``(max(1, batch_size // m), m seq_len + 1)``), in the
        order of :meth:`val_loss_tags`."""
        windows = EvalWindows(self.packed.tokens("validation"), self.seq_len, self.val_windows)
        usual = DataLoader(self._with_ids(windows), batch_size=self.batch_size, **self._loader_options())
        if not self.long_multiples:
            return usual
        documents = self.documents("validation")
        return [usual, *(DataLoader(DocumentWindows(documents, m * self.seq_len, self.val_windows_long),
                                    batch_size=max(1, self.batch_size // m), **self._loader_options())
                         for m in self.long_multiples)]

    def test_dataloader(self) -> DataLoader:
        """Fixed test windows, made like the validation windows."""
        return DataLoader(self._with_ids(EvalWindows(self.packed.tokens("test"), self.seq_len, self.val_windows)),
                          batch_size=self.batch_size, **self._loader_options())

    def _with_ids(self, windows: TrainWindows | EvalWindows) -> Dataset:
        """``windows`` as ``(tokens, document_ids)`` items when ``document_mask`` is on, else unchanged."""
        return WithDocumentIds(windows, self.tokenizer.eod_id) if self.document_mask else windows

    def provenance(self) -> dict:
        """What the run record stores about the data: corpus recipe, manifest hash, tokenizer, cache and split sizes."""
        record = {"corpus": self.corpus.name, "recipe": self.corpus.recipe(), "tokenizer": self.tokenizer.config(),
                  "seq_len": self.seq_len, "seed": self.stream_seed(), "passkey_rate": self.passkey_rate,
                  "val_multiples": list(self.val_multiples), "document_mask": self.document_mask}
        if self._packed is not None:
            meta = self._packed.meta
            record.update(manifest_hash=meta["manifest_hash"], cache=str(self._packed.directory),
                          splits={split: {key: value for key, value in info.items() if key != "doc_ids"}
                                  for split, info in meta["splits"].items()})
        return record

    def _loader_options(self) -> dict:
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0,
                "pin_memory": torch.cuda.is_available()}
