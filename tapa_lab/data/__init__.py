"""Data: corpus recipes, tokenizers, packing and the training/evaluation windows.

Corpus recipes (``data.corpus: {class_path: tapa_lab.data.<Recipe>}``): :class:`Shakespeare` (default),
:class:`ShakespeareSpeeches` (short documents),
:class:`PyStdlib`, :class:`DebDocs`, :class:`LocalFiles`, :class:`HubDataset`, :class:`Fixture`.
Tokenizers (``data.tokenizer``): :class:`ByteTokenizer` (default), :class:`BPETokenizer`.
"""

from tapa_lab.data.corpus import Corpus, CorpusError, Document
from tapa_lab.data.debdocs import DebDocs
from tapa_lab.data.eval_windows import EvalWindows
from tapa_lab.data.fixture import Fixture
from tapa_lab.data.hub import HubDataset
from tapa_lab.data.local_files import LocalFiles
from tapa_lab.data.manifest import Manifest
from tapa_lab.data.packing import PackedCorpus, pack_corpus
from tapa_lab.data.pystdlib import PyStdlib
from tapa_lab.data.shakespeare import Shakespeare
from tapa_lab.data.shakespeare_speeches import ShakespeareSpeeches
from tapa_lab.data.split import SPLITS, Split, assign_splits
from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.data.tokenizer_bpe import BPETokenizer
from tapa_lab.data.tokenizer_byte import ByteTokenizer
from tapa_lab.data.train_windows import ResumableSampler, StreamLoader, TrainWindows

__all__ = [
    "BPETokenizer", "ByteTokenizer", "Corpus", "CorpusError", "DebDocs", "Document", "EvalWindows", "Fixture",
    "HubDataset", "LocalFiles", "Manifest", "PackedCorpus", "PyStdlib", "ResumableSampler", "SPLITS", "Shakespeare",
    "ShakespeareSpeeches", "Split", "StreamLoader", "Tokenizer", "TrainWindows", "assign_splits", "pack_corpus",
]
