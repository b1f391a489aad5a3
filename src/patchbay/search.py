"""Tool search: rank the catalog's tools against what a user asked, offline and in a few milliseconds.

Why lexical: it needs no model download, is deterministic, and is fast enough to run on every turn. The
ranking is BM25F (BM25 over several fields with per-field weights and length normalisation) over:

- the exposed name split into words (``snake_case``, ``camelCase``, ``kebab-case``, ``__``), weighted most:
  a tool's name is the densest statement of what it does;
- the description;
- the parameter names and descriptions (weighted least: they name objects, not actions);
- the server's name, so "... on github" prefers GitHub's tools.

Users do not phrase requests the way tools describe themselves ("look up" vs ``search``, "PR" vs "pull
request", "remove" vs ``delete``). Words are lightly stemmed and abbreviations expanded. Each query word
then scores a tool by its best stand-in: the word itself anywhere, or, at a lower weight and only in the
tool's name, a synonym from a table of common assistant vocabulary or an index word sharing its first
letters. A coordination factor prefers tools that answer more of the query's words, and a tool whose own
name words were all asked for gets a boost. Weights were chosen on the dev half of
``bench/data/search_requests.json`` (see ``bench/search_quality.py``), never on the test half.

The index is updated incrementally: ``sync()`` diffs the catalog's entries by identity (a re-listed
server brings new ``Tool`` objects; the others keep theirs) and re-indexes only what changed. Scores
are precomputed per (term, tool) so a query is a few dictionary walks; when the collection has drifted
enough to move the averages BM25 depends on, every tool's impacts are recomputed once.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # annotations only: `patchbay --help` must not import the SDK (catalog.py does)
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
# A stand-in for a typed word (a synonym from the table, or an index word sharing its first PREFIX
# letters: "configuration" ~ "config") counts this much of the word itself.
SYNONYM_WEIGHT = 0.6
STANDIN_FIELDS = ("name", "server")
NAME_COVER_BOOST = 0.25  # share of the top raw score added when the query covers every name word
PREFIX = 6
CANDIDATES = 100  # how many leading tools get the second phase
EXPANSION_CACHE = 512  # query words whose expanded postings are kept
COORDINATION = 0.3  # scores scale with (query words answered / query words) ** this
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
    up out over off again now tell give me it'd im id youre thats hey hi thanks thank ok okay
    everything anything something nothing thing things stuff one ones"""
STOPWORDS = frozenset(_STOPWORDS.split())

# Groups of words users and tools use for the same thing. A query word in a group also searches for the
# group's other words, at SYNONYM_WEIGHT. Written from common assistant vocabulary, not from any tool list.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    # actions
    ("search", "find", "lookup", "look", "query", "locate", "seek", "discover", "grep", "where"),
    ("create", "make", "add", "new", "open", "start", "insert", "post", "write", "generate", "set", "file"),
    (
        "delete",
        "remove",
        "drop",
        "erase",
        "destroy",
        "rm",
        "trash",
        "clear",
        "purge",
        "unset",
        "forget",
        "wipe",
    ),
    ("list", "show", "display", "view", "see", "enumerate", "browse", "all", "overview", "which"),
    (
        "get",
        "fetch",
        "retrieve",
        "read",
        "load",
        "pull",
        "download",
        "info",
        "detail",
        "describe",
        "inspect",
        "grab",
        "open",
        "look",
        "check",
    ),
    ("update", "edit", "change", "modify", "rename", "patch", "replace", "alter", "fix", "set"),
    ("save", "write", "store", "persist", "keep", "record"),
    ("send", "message", "notify", "post", "dm", "ping", "reply", "chat", "tell", "say", "announce"),
    ("run", "execute", "exec", "invoke", "launch", "trigger", "call", "kick", "start"),
    ("stop", "cancel", "abort", "kill", "terminate", "halt", "end"),
    ("close", "shut", "quit", "exit"),
    ("copy", "duplicate", "clone"),
    ("move", "rename", "mv", "transfer", "transition"),
    ("switch", "checkout", "change", "use", "select", "context"),
    ("wait", "sleep", "pause", "until"),
    ("watch", "monitor", "track", "alert", "subscribe"),
    ("explain", "mean", "meaning", "documentation", "describe", "definition", "what"),
    ("summarize", "summary", "overview", "digest"),
    ("compare", "diff", "difference", "against", "versus", "vs"),
    ("history", "log", "recent", "last", "previous", "past", "changelog", "version", "revision"),
    ("count", "how", "many", "number", "total", "statistic", "stat"),
    ("sum", "add", "plus", "total", "calculate", "aggregate"),
    ("group", "aggregate", "aggregation", "pipeline"),
    ("assign", "owner", "assignee", "give"),
    ("approve", "accept", "lgtm", "review", "sign"),
    ("upload", "attach", "attachment"),
    ("react", "reaction", "emoji", "thumbs", "upvote"),
    ("draw", "paint", "illustrate", "render", "generate", "image"),
    ("think", "reason", "plan", "step", "reflect"),
    (
        "remember",
        "memory",
        "memorize",
        "recall",
        "fact",
        "know",
        "knowledge",
        "mind",
        "note",
        "observation",
        "entity",
    ),
    ("scrape", "crawl", "extract", "content", "text", "page"),
    # objects
    ("screenshot", "capture", "snapshot", "screen"),
    ("navigate", "visit", "goto", "go", "open", "browse", "url", "page", "website", "site", "link"),
    ("click", "press", "tap", "button"),
    ("type", "fill", "enter", "input", "form", "field"),
    ("key", "keyboard", "press", "keystroke"),
    ("tab", "window", "page"),
    ("time", "clock", "timezone", "hour", "zone", "date"),
    ("calendar", "event", "meeting", "schedule", "appointment"),
    ("pr", "pull", "request", "merge", "mr"),
    ("issue", "bug", "ticket", "problem", "error", "task", "story", "epic"),
    ("repo", "repository", "project", "codebase"),
    ("directory", "folder", "dir", "path"),
    ("file", "document", "doc"),
    ("database", "db", "sql", "table", "query", "collection", "record", "row"),
    (
        "error",
        "exception",
        "crash",
        "failure",
        "fail",
        "failing",
        "throw",
        "500",
        "stacktrace",
        "traceback",
        "broken",
    ),
    ("deploy", "deployment", "release", "ship", "rollout", "rollback", "production", "prod"),
    ("kubernetes", "k8s", "kubectl", "pod", "cluster", "node", "namespace"),
    ("log", "logs", "output", "trace", "console"),
    ("image", "img", "picture", "photo", "pic", "png", "jpg", "jpeg", "gif", "media"),
    ("web", "internet", "online", "google", "news", "latest", "current"),
    ("location", "place", "address", "map", "near", "nearby", "coordinate", "geocode"),
    ("direction", "route", "drive", "driving", "navigation", "directions"),
    ("distance", "far", "apart", "away", "between", "mile", "km"),
    ("elevation", "altitude", "height", "high", "sea", "level"),
    ("size", "space", "big", "large", "disk", "storage", "bytes"),
    ("multiple", "several", "many", "batch", "bulk", "once"),
    ("payment", "charge", "pay", "invoice", "billing", "refund"),
    ("customer", "client", "account", "contact", "crm", "lead", "company", "deal"),
    ("user", "who", "people", "person", "member", "profile", "team", "org", "organization"),
    ("author", "blame", "wrote", "who"),
    ("commit", "history", "change"),
    ("environment", "variable", "config", "configuration", "setting"),
    ("cache", "key", "value"),
    ("docs", "documentation", "manual", "reference", "library", "api", "guide"),
    ("app", "application", "service"),
    ("test", "tests", "flaky", "ci", "build", "pipeline", "job", "workflow"),
    ("label", "tag"),
    ("comment", "note", "reply", "discussion"),
    ("performance", "slow", "speed", "fast", "latency", "trace", "profile"),
)

# Words that name a kind of file: a file name in a request ("report.md") is about files.
_EXTENSIONS = "md txt csv json yaml yml toml xml html htm css js ts py go rs java rb sh pdf doc docx xls log"
FILE_EXTENSIONS = frozenset(_EXTENSIONS.split())

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


class QueryWord(NamedTuple):
    """One concept of the query: the words typed for it, how often, and their synonyms."""

    term: str
    times: float
    synonyms: frozenset[str]
    also: frozenset[str] = frozenset()  # other typed words that are synonyms of ``term``


def query_groups(query: str, *, expand: bool = True) -> list[QueryWord]:
    """The query as concepts. Each scores a tool once, by its best match (a typed word anywhere, or a
    stand-in at ``SYNONYM_WEIGHT`` in the name), so a big synonym group cannot pile up, and "make a
    new ..." (two words of one group) counts once."""
    typed = terms(query)
    if any(w in FILE_EXTENSIONS for w in words(query)):
        typed.append("file")
    groups: list[QueryWord] = []
    for t in typed:
        for i, g in enumerate(groups):
            if t == g.term:
                groups[i] = g._replace(times=g.times + 1.0)
                break
            if t in g.synonyms or t in g.also:
                groups[i] = g._replace(also=g.also | {t})
                break
        else:
            groups.append(QueryWord(t, 1.0, SYNONYMS.get(t, frozenset()) if expand else frozenset()))
    return groups


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
    own_terms: frozenset[str]  # the name's words that are not the server's


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
        self._standins: dict[str, dict[str, float]] = {}  # the same, times SYNONYM_WEIGHT
        self._basis: tuple[int, dict[str, float]] = (0, {})  # N and average lengths the impacts used
        self._catalog_version = -1
        self._idfs: dict[str, float] = {}  # as of the last normalisation
        self._expansions: dict[
            tuple[str, frozenset[str], frozenset[str]], tuple[frozenset[str], dict[str, float]]
        ] = {}
        self._vocabulary: list[str] | None = None  # sorted terms, for word variants; None when stale

    def __len__(self) -> int:
        return len(self._docs)

    # --- updates -----------------------------------------------------------------------------------

    def add(self, name: str, server: str, tool: types.Tool, *, _bulk: bool = False) -> None:
        """Index (or re-index) one tool under its exposed name."""
        self._expansions.clear()
        if name in self._docs:
            self.remove(name, _bulk=_bulk)
        raw = tool_fields(name, server, tool)
        counts: dict[str, dict[str, int]] = {}
        for f, ts in raw.items():
            c: dict[str, int] = {}
            for t in ts:
                c[t] = c.get(t, 0) + 1
            counts[f] = c
        name_terms = frozenset(raw["name"])
        lengths = {f: len(ts) for f, ts in raw.items()}
        doc = _Doc(name, server, tool, counts, lengths, name_terms, name_terms - frozenset(raw["server"]))
        self._docs[name] = doc
        for f, n in doc.lengths.items():
            self._total_len[f] += n
        for t in self._doc_terms(doc):
            if t not in self._df:
                self._vocabulary = None
            self._df[t] = self._df.get(t, 0) + 1
        if _bulk:
            return  # the caller renormalises once at the end
        if self._drifted():
            self._renormalise()
        else:
            self._write_impacts(doc)

    def add_many(self, items: Iterable[tuple[str, str, types.Tool]]) -> None:
        """Index many ``(name, server, tool)`` at once: one normalisation pass instead of one per drift."""
        for name, server, tool in items:
            self.add(name, server, tool, _bulk=True)
        self._renormalise()

    def remove(self, name: str, *, _bulk: bool = False) -> None:
        doc = self._docs.pop(name, None)
        if doc is None:
            return
        self._expansions.clear()
        for f, n in doc.lengths.items():
            self._total_len[f] -= n
        for t in self._doc_terms(doc):
            left = self._df[t] - 1
            if left:
                self._df[t] = left
            else:
                del self._df[t]
                self._vocabulary = None
            for table in (self._impacts, self._standins):
                postings = table.get(t)
                if postings is not None:
                    postings.pop(name, None)
                    if not postings:
                        del table[t]
        if not _bulk and self._drifted():
            self._renormalise()

    def sync(self, catalog: Catalog) -> None:
        """Bring the index up to date with the catalog, re-indexing only tools that changed."""
        if catalog.version == self._catalog_version:
            return
        current = catalog.tools
        gone = [n for n in self._docs if n not in current]
        changed = []
        for name, entry in current.items():
            doc = self._docs.get(name)
            if doc is None or doc.tool is not entry.tool or doc.server != entry.source:
                changed.append(entry)
        # Many changes (the first sync, a big server arriving): one normalisation pass for all of them.
        bulk = len(gone) + len(changed) > RENORMALISE_DRIFT * max(len(self._docs), 1)
        for name in gone:
            self.remove(name, _bulk=bulk)
        for entry in changed:
            self.add(entry.name, entry.source, entry.tool, _bulk=bulk)
        if bulk:
            self._renormalise()
        self._catalog_version = catalog.version

    def index_entries(self, entries: Iterable[ToolEntry]) -> None:
        self.add_many((e.name, e.source, e.tool) for e in entries)

    # --- queries -----------------------------------------------------------------------------------

    def search(
        self, query: str, limit: int = DEFAULT_LIMIT, *, allowed: Container[str] | None = None
    ) -> list[ToolMatch]:
        """The best ``limit`` tools for ``query``, best first; ``allowed`` restricts the candidates."""
        return [self.match(name, score) for score, name in self.ranked(query, limit, allowed=allowed)]

    def ranked(
        self, query: str, limit: int = DEFAULT_LIMIT, *, allowed: Container[str] | None = None
    ) -> list[tuple[float, str]]:
        """``search`` as (score, exposed name) pairs, best first: for rankings built on this one.

        Two phases, for speed: BM25F with each query word scored by its best stand-in, then the
        coordination factor and the name boost on the leading candidates only.
        """
        if not isinstance(query, str) or not query.strip():
            raise ValueError("the search query is empty; say what the tool should do")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        limit = min(limit, MAX_LIMIT)
        groups = query_groups(query, expand=self.expand)
        typed = {t for g in groups for t in (g.term, *g.also)}
        scores: dict[str, float] = {}
        bests: list[tuple[frozenset[str], dict[str, float]]] = []  # per query word: its terms, its scores
        for term, count, synonyms, also in groups:
            reach, best = self._expanded(term, synonyms, also)
            if not scores:
                scores = {name: count * value for name, value in best.items()}
            else:
                get = scores.get
                for name, value in best.items():
                    scores[name] = get(name, 0.0) + count * value
            bests.append((reach, best))
        if allowed is not None:
            scores = {n: s for n, s in scores.items() if n in allowed}
        if not scores:
            return []
        pool = heapq.nlargest(max(CANDIDATES, 4 * limit), scores, key=scores.__getitem__)
        top = scores[pool[0]]
        ranked: list[tuple[float, str]] = []
        for name in pool:
            score = scores[name]
            doc = self._docs[name]
            answered = [t for t, b in bests if name in b]
            if COORDINATION and len(bests) > 1:
                score *= (len(answered) / len(bests)) ** COORDINATION
            if self.boost and doc.own_terms:
                reached: set[str] = set()
                for t in answered:
                    reached |= t & doc.name_terms
                # every word of the tool's own name was asked for, one at least in the user's own words
                if doc.own_terms <= reached and not doc.own_terms.isdisjoint(typed):
                    score += NAME_COVER_BOOST * top
            ranked.append((score, name))
        ranked.sort(key=lambda sn: (-sn[0], sn[1]))
        return ranked[:limit]

    def match(self, name: str, score: float) -> ToolMatch:
        """An indexed tool as a search result with ``score`` (for rankings made outside this index)."""
        doc = self._docs[name]
        return ToolMatch(name, score, doc.server, doc.tool.model_copy(update={"name": name}))

    # --- internals ---------------------------------------------------------------------------------

    def _expanded(
        self, term: str, synonyms: frozenset[str], also: frozenset[str] = frozenset()
    ) -> tuple[frozenset[str], dict[str, float]]:
        """Per tool, the best score of ``term`` or one of its stand-ins; cached until the index changes
        (requests reuse a small vocabulary, and merging the postings of a word's stand-ins is the cost)."""
        key = (term, synonyms, also)
        cached = self._expansions.get(key)
        if cached is not None:
            return cached
        related = [r for r in self._related(term, synonyms) if r not in also]
        best: dict[str, float] = dict(self._impacts.get(term, {}))
        sources = [self._impacts.get(t) for t in sorted(also)] + [self._standins.get(r) for r in related]
        for postings in sources:
            if not postings:
                continue
            scaled = dict(postings)
            for name in scaled.keys() & best.keys():  # the keys only one side has merge at C speed
                if best[name] > scaled[name]:
                    scaled[name] = best[name]
            best.update(scaled)
        result = (frozenset([term, *also, *related]), best)
        if len(self._expansions) >= EXPANSION_CACHE:
            self._expansions.clear()
        self._expansions[key] = result
        return result

    def _related(self, term: str, synonyms: frozenset[str]) -> list[str]:
        """The terms that stand in for ``term``: synonyms, and the index's words that
        share its first ``PREFIX`` letters (morphology the stemmer misses: "configuration" ~ "config")."""
        df = self._df
        out = [s for s in synonyms if s in df]
        if not self.expand or len(term) < PREFIX or term.isdigit():
            return out
        vocab = self._vocabulary
        if vocab is None:
            vocab = self._vocabulary = sorted(self._df)
        head = term[:PREFIX]
        i = bisect.bisect_left(vocab, head)
        while i < len(vocab) and vocab[i].startswith(head):
            if vocab[i] != term and vocab[i] not in synonyms:
                out.append(vocab[i])
            i += 1
        return out

    @staticmethod
    def _doc_terms(doc: _Doc) -> set[str]:
        out: set[str] = set()
        for c in doc.fields.values():
            out.update(c)
        return out

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
        self._idfs = {t: self._compute_idf(t) for t in self._df}
        self._expansions.clear()
        self._impacts = {}
        self._standins = {}
        for doc in self._docs.values():
            self._write_impacts(doc)

    def _idf(self, term: str) -> float:
        idf = self._idfs.get(term)
        return idf if idf is not None else self._compute_idf(term)

    def _compute_idf(self, term: str) -> float:
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
        standin_fields = STANDIN_FIELDS
        for t, x in tf.items():
            impact = self._idf(t) * x * (K1 + 1.0) / (x + K1)
            self._impacts.setdefault(t, {})[doc.name] = impact
            if any(t in doc.fields[f] for f in standin_fields):
                self._standins.setdefault(t, {})[doc.name] = SYNONYM_WEIGHT * impact
