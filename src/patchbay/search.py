"""Tool search: rank the catalog's tools against what a user asked, offline and in a few milliseconds.

Why lexical: it needs no model download, is deterministic, and is fast enough to run on every turn. The
ranking is BM25F (BM25 over several fields with per-field weights and length normalisation) over:

- the exposed name split into words (``snake_case``, ``camelCase``, ``kebab-case``, ``__``), weighted most:
  a tool's name is the densest statement of what it does;
- the description;
- the parameter names and descriptions (weighted least: they name objects, not actions);
- the server's name, so "... on github" prefers GitHub's tools.

Users do not phrase requests the way tools describe themselves ("look up" vs ``search``, "PR" vs "pull
request", "remove" vs ``delete``). Words are lightly stemmed and the query is expanded, at a lower
weight, through a small table of synonyms and abbreviations of common assistant vocabulary. Finally, a
tool whose name words are all covered by the (expanded) query gets a small boost.

The index is updated incrementally: ``sync()`` diffs the catalog's entries by identity (a re-listed
server brings new ``Tool`` objects; the others keep theirs) and re-indexes only what changed. Scores
are precomputed per (term, tool) so a query is a few dictionary walks; when the collection has drifted
enough to move the averages BM25 depends on, every tool's impacts are recomputed once.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import mcp.types as types

from patchbay.catalog import Catalog, ToolEntry

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 8
MAX_LIMIT = 200

# BM25 parameters and field weights (tf multipliers in BM25F).
K1 = 1.2
FIELDS: dict[str, tuple[float, float]] = {  # field -> (weight, b)
    "name": (3.0, 0.3),
    "server": (1.0, 0.0),
    "description": (1.0, 0.75),
    "params": (0.4, 0.75),
}
SYNONYM_WEIGHT = 0.35  # a word reached through the table counts this much of a word the user typed
NAME_COVER_BOOST = 0.25  # share of the top raw score added when the query covers every name word
RENORMALISE_DRIFT = 0.2  # recompute all impacts when N or an average length moved by this much

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[a-z0-9]+")
_ACRONYM_PLURAL = re.compile(r"\b([A-Z]{2,})s\b")  # "PRs", "URLs", "APIs": one word, not "P Rs"

_STOPWORDS = """
    a an the and or but if then else of to in on at by for from with without into onto about as is are
    was were be been being am do does did doing done have has had having i me my mine myself we us our you
    your yours he she it its they them their this that these those there here what whats which who whom
    whose when where why how can could would should will shall may might must please pls plz just also
    some any all every each so such very really want wanna need needs let lets like s t d ll m re ve
    up out over off again now tell give me it'd im id youre thats hey hi thanks thank ok okay"""
STOPWORDS = frozenset(_STOPWORDS.split())

# Groups of words users and tools use for the same thing. A query word in a group also searches for the
# group's other words, at SYNONYM_WEIGHT. Written from common assistant vocabulary, not from any tool list.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("search", "find", "lookup", "look", "query", "locate", "seek", "discover", "grep"),
    ("create", "make", "add", "new", "open", "start", "insert", "post", "write", "generate", "set"),
    ("delete", "remove", "drop", "erase", "destroy", "rm", "trash", "clear", "purge", "unset"),
    ("list", "show", "display", "view", "see", "enumerate", "browse", "all", "overview"),
    ("get", "fetch", "retrieve", "read", "load", "pull", "download", "info", "detail", "describe", "inspect"),
    ("update", "edit", "change", "modify", "rename", "patch", "replace", "alter", "fix"),
    ("send", "message", "notify", "post", "dm", "ping", "reply", "chat"),
    ("run", "execute", "exec", "invoke", "launch", "trigger", "call"),
    ("remember", "memory", "store", "save", "memorize", "note", "observation", "entity", "recall"),
    ("screenshot", "capture", "snapshot", "screen", "picture"),
    ("navigate", "visit", "goto", "go", "open", "browse", "url", "page", "website", "site"),
    ("click", "press", "tap", "button"),
    ("type", "fill", "enter", "input", "form"),
    ("time", "clock", "timezone", "hour", "now", "zone"),
    ("calendar", "event", "meeting", "schedule", "appointment"),
    ("pr", "pull", "request", "merge"),
    ("mr", "merge", "request"),
    ("issue", "bug", "ticket", "problem"),
    ("repo", "repository", "project", "codebase"),
    ("directory", "folder", "dir"),
    ("file", "document", "doc"),
    ("database", "db", "sql", "table", "query"),
    ("error", "exception", "crash", "failure", "fail", "throw", "500", "stacktrace", "traceback", "broken"),
    ("deploy", "deployment", "release", "ship", "rollout"),
    ("kubernetes", "k8s", "kubectl", "pod", "cluster"),
    ("log", "logs", "output", "trace"),
    ("image", "img", "picture", "photo", "pic"),
    ("web", "internet", "online", "google"),
    ("location", "place", "address", "map", "where", "near", "nearby"),
    ("direction", "route", "drive", "navigation", "distance"),
    ("payment", "charge", "pay", "invoice", "billing", "refund"),
    ("customer", "client", "user", "account"),
    ("commit", "history", "diff", "change"),
    ("env", "environment", "variable", "config", "setting"),
    ("copy", "duplicate", "clone"),
    ("move", "rename", "mv"),
    ("cache", "key", "value"),
    ("think", "reason", "plan", "step"),
    ("docs", "documentation", "manual", "reference", "library", "api"),
    ("scrape", "crawl", "extract", "content"),
    ("close", "shut", "quit", "exit"),
    ("wait", "sleep", "pause"),
    ("app", "application", "service"),
    ("team", "member", "people", "person", "org", "organization"),
)

# Abbreviations expanded (at full weight, being the same word) before anything else.
ABBREVIATIONS: Mapping[str, str] = {
    "prs": "pr",
    "mrs": "mr",
    "k8": "kubernetes",
    "k8s": "kubernetes",
    "db": "database",
    "dbs": "database",
    "repos": "repo",
    "dirs": "directory",
    "msg": "message",
    "msgs": "message",
    "info": "information",
    "cfg": "config",
    "conf": "config",
    "env": "environment",
    "envs": "environment",
    "img": "image",
    "pic": "image",
    "pics": "image",
    "tz": "timezone",
    "py": "python",
    "js": "javascript",
    "ts": "typescript",
    "url": "url",
    "urls": "url",
    "dm": "message",
    "dms": "message",
    "ss": "screenshot",
    "pwd": "directory",
    "ls": "list",
    "rm": "delete",
    "mkdir": "directory",
}


def stem(word: str) -> str:
    """A light suffix stripper (plural, -ing, -ed, -ies): enough for "deploying" to meet ``deploy``."""
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, repl, keep in (
        ("ies", "y", 3),
        ("sses", "ss", 3),
        ("ing", "", 4),
        ("ed", "", 4),
        ("es", "", 4),
        ("s", "", 3),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) + len(repl) >= keep:
            if suffix == "es" and not word.endswith(("ches", "shes", "xes", "zes", "sses")):
                continue  # "files" -> "file" by the "s" rule, "branches" -> "branch" here
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            out = word[: len(word) - len(suffix)] + repl
            if suffix in ("ing", "ed") and len(out) >= 3 and out[-1] == out[-2] and out[-1] not in "lsz":
                out = out[:-1]  # "running" -> "run", "dropped" -> "drop"
            return out
    return word


def words(text: str) -> list[str]:
    """Lower-case words of any identifier or sentence: ``getPullRequest``, ``git__list-repos``, prose."""
    return _WORD.findall(_CAMEL.sub(" ", _ACRONYM_PLURAL.sub(r"\1S", text)).lower())


def terms(text: str) -> list[str]:
    """Index terms: words, abbreviations expanded, stop words dropped, stemmed."""
    out: list[str] = []
    for w in words(text):
        w = ABBREVIATIONS.get(w, w)
        if w in STOPWORDS:
            continue
        out.append(stem(w))
    return out


def _build_synonyms() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for group in SYNONYM_GROUPS:
        stems = {stem(ABBREVIATIONS.get(w, w)) for w in group}
        for s in stems:
            table.setdefault(s, set()).update(stems)
    return {k: frozenset(v - {k}) for k, v in table.items()}


SYNONYMS = _build_synonyms()


def query_terms(query: str, *, expand: bool = True) -> dict[str, float]:
    """The query's terms with weights: typed words 1.0 (repeats add up), synonyms ``SYNONYM_WEIGHT``."""
    weights: dict[str, float] = {}
    typed = terms(query)
    for t in typed:
        weights[t] = weights.get(t, 0.0) + 1.0
    if expand:
        for t in typed:
            for s in SYNONYMS.get(t, ()):
                if s not in weights or weights[s] < SYNONYM_WEIGHT:
                    weights[s] = max(weights.get(s, 0.0), SYNONYM_WEIGHT)
    return weights


@dataclass(frozen=True, slots=True)
class ToolMatch:
    """One search result: the exposed name, its score (higher is better; comparable within one query)."""

    name: str
    score: float
    server: str
    tool: types.Tool  # with the exposed name

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": round(self.score, 4),
            "server": self.server,
            "description": self.tool.description or self.tool.title or "",
            "inputSchema": self.tool.input_schema,
        }


def _param_text(schema: Any) -> str:
    """Parameter names and descriptions, one level of nesting deep (enough for option objects)."""
    if not isinstance(schema, dict):
        return ""
    parts: list[str] = []
    props = schema.get("properties")
    if isinstance(props, dict):
        for key, sub in list(props.items())[:40]:
            parts.append(str(key))
            if isinstance(sub, dict):
                desc = sub.get("description")
                if isinstance(desc, str):
                    parts.append(desc[:300])
                if isinstance(sub.get("properties"), dict):
                    parts.append(_param_text(sub))
    return " ".join(parts)


def tool_fields(name: str, server: str, tool: types.Tool) -> dict[str, list[str]]:
    """The searchable text of one tool, per field, as index terms."""
    description = " ".join(x for x in (tool.title, tool.description) if x)
    annotations_title = tool.annotations.title if tool.annotations and tool.annotations.title else ""
    return {
        "name": terms(f"{name} {tool.name} {annotations_title}") or ["_"],
        "server": terms(server),
        "description": terms(description[:4000]),
        "params": terms(_param_text(tool.input_schema)),
    }


@dataclass
class _Doc:
    name: str
    server: str
    tool: types.Tool
    fields: dict[str, dict[str, int]]  # field -> term -> count
    lengths: dict[str, int]
    name_terms: frozenset[str]


class SearchIndex:
    """A BM25F index over tools, updated incrementally; see the module docstring for the ranking."""

    def __init__(self, *, expand: bool = True, boost: bool = True, fields: Mapping[str, float] | None = None):
        self.expand = expand
        self.boost = boost
        self.field_params = {
            f: (fields.get(f, 0.0) if fields is not None else w, b) for f, (w, b) in FIELDS.items()
        }
        self._docs: dict[str, _Doc] = {}
        self._df: dict[str, int] = {}
        self._total_len: dict[str, int] = dict.fromkeys(FIELDS, 0)
        self._impacts: dict[str, dict[str, float]] = {}  # term -> tool name -> BM25F impact
        self._basis: tuple[int, dict[str, float]] = (0, {})  # N and average lengths the impacts used
        self._catalog_version = -1

    def __len__(self) -> int:
        return len(self._docs)

    # --- updates -----------------------------------------------------------------------------------

    def add(self, name: str, server: str, tool: types.Tool) -> None:
        """Index (or re-index) one tool under its exposed name."""
        if name in self._docs:
            self.remove(name)
        raw = tool_fields(name, server, tool)
        counts: dict[str, dict[str, int]] = {}
        for f, ts in raw.items():
            c: dict[str, int] = {}
            for t in ts:
                c[t] = c.get(t, 0) + 1
            counts[f] = c
        doc = _Doc(name, server, tool, counts, {f: len(ts) for f, ts in raw.items()}, frozenset(raw["name"]))
        self._docs[name] = doc
        for f, n in doc.lengths.items():
            self._total_len[f] += n
        for t in self._doc_terms(doc):
            self._df[t] = self._df.get(t, 0) + 1
        if self._drifted():
            self._renormalise()
        else:
            self._write_impacts(doc)

    def remove(self, name: str) -> None:
        doc = self._docs.pop(name, None)
        if doc is None:
            return
        for f, n in doc.lengths.items():
            self._total_len[f] -= n
        for t in self._doc_terms(doc):
            left = self._df[t] - 1
            if left:
                self._df[t] = left
            else:
                del self._df[t]
            postings = self._impacts.get(t)
            if postings is not None:
                postings.pop(name, None)
                if not postings:
                    del self._impacts[t]
        if self._drifted():
            self._renormalise()

    def sync(self, catalog: Catalog) -> None:
        """Bring the index up to date with the catalog, re-indexing only tools that changed."""
        if catalog.version == self._catalog_version:
            return
        current = catalog.tools
        for name in [n for n in self._docs if n not in current]:
            self.remove(name)
        for name, entry in current.items():
            doc = self._docs.get(name)
            if doc is None or doc.tool is not entry.tool or doc.server != entry.source:
                self.add(name, entry.source, entry.tool)
        self._catalog_version = catalog.version

    def index_entries(self, entries: Iterable[ToolEntry]) -> None:
        for e in entries:
            self.add(e.name, e.source, e.tool)

    # --- queries -----------------------------------------------------------------------------------

    def search(
        self, query: str, limit: int = DEFAULT_LIMIT, *, allowed: Container[str] | None = None
    ) -> list[ToolMatch]:
        """The best ``limit`` tools for ``query``, best first; ``allowed`` restricts the candidates."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("the search query is empty; say what the tool should do")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        limit = min(limit, MAX_LIMIT)
        qterms = query_terms(query, expand=self.expand)
        scores: dict[str, float] = {}
        matched: dict[str, set[str]] = {}
        for term, weight in qterms.items():
            postings = self._impacts.get(term)
            if not postings:
                continue
            get = scores.get
            for name, impact in postings.items():
                scores[name] = get(name, 0.0) + weight * impact
            if self.boost:
                for name in postings:
                    m = matched.get(name)
                    if m is None:
                        matched[name] = {term}
                    else:
                        m.add(term)
        if allowed is not None:
            scores = {n: s for n, s in scores.items() if n in allowed}
        if not scores:
            return []
        if self.boost:
            top = max(scores.values())
            for name in scores:
                doc = self._docs[name]
                cover = matched[name] & doc.name_terms
                # every name word asked for (ignoring the server's prefix words)
                own = doc.name_terms - self._server_terms(doc)
                if own and own <= cover:
                    scores[name] += NAME_COVER_BOOST * top
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        out = []
        for name, score in best:
            doc = self._docs[name]
            out.append(ToolMatch(name, score, doc.server, doc.tool.model_copy(update={"name": name})))
        return out

    # --- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _doc_terms(doc: _Doc) -> set[str]:
        out: set[str] = set()
        for c in doc.fields.values():
            out.update(c)
        return out

    @staticmethod
    def _server_terms(doc: _Doc) -> frozenset[str]:
        return frozenset(doc.fields["server"])

    def _averages(self) -> dict[str, float]:
        n = max(len(self._docs), 1)
        return {f: max(self._total_len[f] / n, 1.0) for f in FIELDS}

    def _drifted(self) -> bool:
        n0, avg0 = self._basis
        n = len(self._docs)
        if n0 == 0:
            return n > 0
        if abs(n - n0) > RENORMALISE_DRIFT * n0:
            return True
        avg = self._averages()
        return any(abs(avg[f] - avg0[f]) > RENORMALISE_DRIFT * avg0[f] for f in FIELDS)

    def _renormalise(self) -> None:
        """Recompute every impact with the current N, document frequencies and average lengths."""
        self._basis = (len(self._docs), self._averages())
        self._impacts = {}
        for doc in self._docs.values():
            self._write_impacts(doc)

    def _idf(self, term: str) -> float:
        n = self._basis[0]
        df = min(self._df.get(term, 0), n)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _write_impacts(self, doc: _Doc) -> None:
        avg = self._basis[1]
        tf: dict[str, float] = {}
        for f, counts in doc.fields.items():
            w, b = self.field_params[f]
            if w == 0.0:
                continue
            norm = 1.0 - b + b * doc.lengths[f] / avg.get(f, 1.0)
            for t, c in counts.items():
                tf[t] = tf.get(t, 0.0) + w * c / norm
        for t, x in tf.items():
            self._impacts.setdefault(t, {})[doc.name] = self._idf(t) * x * (K1 + 1.0) / (x + K1)
