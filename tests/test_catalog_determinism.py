"""The incremental catalog gives exactly what recomputing everything from scratch gives, whatever the order.

``reference`` below is the original ``Catalog.rebuild`` (every item of every source walked in rank order,
the first owner keeps a name), kept as the oracle. Random catalogs full of collisions (shared prefixes,
names that only differ in an unsafe character, duplicates within one source, shared URIs and templates,
hidden tools, tool overrides that rename into collisions, re-describe or hide) are built in random orders,
re-listed, removed and re-ranked; after every step the catalog's names, owners, order, conflict notes,
per-source views and renderings must equal the oracle's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import mcp.types as types
import pytest

from patchbay.catalog import FORMATS, Catalog, Listing, safe_name
from patchbay.config import ToolOverride

POOL = ["add", "sub", "a.b", "a_b", "echo", "x" * 70 + "1", "x" * 70 + "2", "read file", "read_file"]
PREFIXES = ["p", "p", "q", "", "p.q", "p_q"]
URIS = [f"test://r/{i}" for i in range(6)]
TEMPLATES = ["test://t/{a}", "test://t/{b}", "db://{x}/y"]


@dataclass
class Spec:
    name: str
    prefix: str
    rank: tuple[int, int, str]
    hidden: frozenset[str]
    listing: Listing
    overrides: dict[str, ToolOverride] | None = None


def reference(specs: list[Spec]) -> dict[str, Any]:
    """The from-scratch rebuild of the original catalog, as plain data."""
    tools: dict[str, tuple[str, str, str | None]] = {}
    prompts: dict[str, str] = {}
    resources: dict[str, tuple[str, str]] = {}
    templates: list[tuple[str, str, str]] = []
    conflicts: dict[str, list[str]] = {}
    for src in sorted(specs, key=lambda s: s.rank):
        notes: list[str] = []
        for tool in src.listing.tools:
            override = (src.overrides or {}).get(tool.name)
            if override is not None and override.hidden:
                continue
            description = tool.description
            if override is not None and override.description is not None:
                description = override.description
            exposed = safe_name(src.prefix, override.name if override and override.name else tool.name)
            if tool.name in src.hidden or exposed in src.hidden:
                continue
            if exposed in tools:
                owner, original, _ = tools[exposed]
                notes.append(
                    f"tool {tool.name!r} is not exposed: the name {exposed!r} already belongs to "
                    f"{owner!r} (tool {original!r})"
                )
                continue
            tools[exposed] = (src.name, tool.name, description)
        for prompt in src.listing.prompts:
            exposed = safe_name(src.prefix, prompt.name)
            if exposed in prompts:
                notes.append(
                    f"prompt {prompt.name!r} is not exposed: the name {exposed!r} already belongs to "
                    f"{prompts[exposed]!r}"
                )
                continue
            prompts[exposed] = src.name
        for res in src.listing.resources:
            if res.uri in resources:
                owner_r = resources[res.uri][0]
                notes.append(f"resource {res.uri!r} is not exposed: the same URI is offered by {owner_r!r}")
                continue
            resources[res.uri] = (src.name, safe_name(src.prefix, res.name))
        for tpl in src.listing.templates:
            owner_t = next((t for t in templates if t[2] == tpl.uri_template), None)
            if owner_t is not None:
                notes.append(
                    f"resource template {tpl.uri_template!r} is not exposed: the same template is "
                    f"offered by {owner_t[1]!r}"
                )
                continue
            templates.append((safe_name(src.prefix, tpl.name), src.name, tpl.uri_template))
        if notes:
            conflicts[src.name] = notes
    return {
        "tools": list(tools.items()),
        "prompts": list(prompts.items()),
        "resources": list(resources.items()),
        "templates": templates,
        "conflicts": conflicts,
    }


def observed(cat: Catalog) -> dict[str, Any]:
    return {
        "tools": [(n, (e.source, e.original, e.tool.description)) for n, e in cat.tools.items()],
        "prompts": [(n, e.source) for n, e in cat.prompts.items()],
        "resources": [(u, (e.source, e.name)) for u, e in cat.resources.items()],
        "templates": [(t.name, t.source, t.template.uri_template) for t in cat.templates],
        "conflicts": cat.conflicts,
    }


def random_spec(rng: random.Random, name: str, rank: int) -> Spec:
    names = rng.choices(POOL, k=rng.randint(0, 6))  # duplicates within a source on purpose
    tools = [types.Tool(name=t, description=f"{name} {t}", input_schema={"type": "object"}) for t in names]
    prompts = [types.Prompt(name=p) for p in rng.choices(POOL[:4], k=rng.randint(0, 2))]
    uris = rng.sample(URIS, rng.randint(0, 3))
    resources = [types.Resource(name=f"r{i}", uri=u) for i, u in enumerate(uris)]
    if rng.random() < 0.2:
        resources.append(types.Resource(name="again", uri=rng.choice(URIS)))
    templates = [
        types.ResourceTemplate(name=f"t{i}", uri_template=u)
        for i, u in enumerate(rng.choices(TEMPLATES, k=rng.randint(0, 2)))
    ]
    hidden = frozenset(rng.sample([*POOL, safe_name("p", "add")], rng.randint(0, 2)))
    listing = Listing(tools=tools, prompts=prompts, resources=resources, templates=templates)
    overrides = {
        t: rng.choice(
            [
                ToolOverride(name=rng.choice(["add", "a_b", "renamed", "read_file"])),  # into collisions
                ToolOverride(description=f"overridden {t}"),
                ToolOverride(hidden=True),
                ToolOverride(name="solo", description="both"),
            ]
        )
        for t in rng.sample(POOL, rng.randint(0, 3))
    }
    return Spec(name, rng.choice(PREFIXES), (rng.randint(0, 1), rank, name), hidden, listing, overrides)


def relisted(s: Spec, rng: random.Random) -> Spec:
    """The same source listing the same names again, with new descriptions (the usual list_changed)."""
    tag = rng.randint(0, 10**6)
    tools = [t.model_copy(update={"description": f"{t.name} v{tag}"}) for t in s.listing.tools]
    listing = Listing(tools=tools, prompts=s.listing.prompts, resources=s.listing.resources)
    listing.templates = s.listing.templates
    return Spec(s.name, s.prefix, s.rank, s.hidden, listing, s.overrides)


def put(cat: Catalog, s: Spec) -> tuple[list[str], list[str]]:
    return cat.set_source(
        s.name, s.listing, prefix=s.prefix, rank=s.rank, hidden=s.hidden, overrides=s.overrides
    )


def check(cat: Catalog, live: dict[str, Spec]) -> None:
    ref = reference(list(live.values()))
    assert observed(cat) == ref
    for name in live:
        mine = [n for n, (src, _, _) in ref["tools"] if src == name]
        assert [e.name for e in cat.tools_of(name)] == mine
        assert cat.tool_count(name) == len(mine)
    for fmt in FORMATS:
        assert [r["name"] if fmt != "openai" else r["function"]["name"] for r in cat.render(fmt)] == [
            n for n, _ in ref["tools"]
        ]
    assert [t.name for t in cat.mcp_tools()] == [n for n, _ in ref["tools"]]


@pytest.mark.parametrize("seed", range(40))
def test_random_changes_match_a_rebuild_from_scratch(seed: int) -> None:
    rng = random.Random(seed)
    cat = Catalog()
    live: dict[str, Spec] = {}
    names = [f"s{i}" for i in range(8)]
    for _ in range(60):
        op = rng.random()
        before = {n for n, _ in reference(list(live.values()))["tools"]}
        if op < 0.25 and live:
            spec = relisted(live[rng.choice(list(live))], rng)
            live[spec.name] = spec
            added, removed = put(cat, spec)
        elif op < 0.6 or not live:
            name = rng.choice(names)
            spec = random_spec(rng, name, names.index(name))
            live[name] = spec
            added, removed = put(cat, spec)
        elif op < 0.8:
            name = rng.choice(list(live))
            del live[name]
            added, removed = cat.remove_source(name)
        else:  # a reload changed the config order
            order = rng.sample(names, len(names))
            for name, spec in live.items():
                spec.rank = (spec.rank[0], order.index(name), name)
                cat.rerank(name, spec.rank)
            added, removed = cat.rebuild()
        after = {n for n, _ in reference(list(live.values()))["tools"]}
        assert added == sorted(after - before)
        assert removed == sorted(before - after)
        check(cat, live)


@pytest.mark.parametrize("seed", range(10))
def test_arrival_order_does_not_change_names_or_conflicts(seed: int) -> None:
    rng = random.Random(1000 + seed)
    specs = [random_spec(rng, f"s{i}", i) for i in range(10)]
    results = []
    for _ in range(6):
        cat = Catalog()
        for spec in rng.sample(specs, len(specs)):
            put(cat, spec)
        results.append(observed(cat))
        check(cat, {s.name: s for s in specs})
    assert all(r == results[0] for r in results)
    assert results[0]["conflicts"], "the random catalogs are meant to collide"


@pytest.mark.parametrize("seed", range(20))
def test_mostly_distinct_catalogs_relisted_in_place_match_a_rebuild(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sources with names of their own (the re-list fast path), some sharing one, re-listed at random."""
    rng = random.Random(2000 + seed)
    fast = 0
    replace = Catalog._replace

    def counted(self: Catalog, src: Any) -> tuple[list[str], list[str]]:
        nonlocal fast
        fast += 1
        return replace(self, src)

    monkeypatch.setattr(Catalog, "_replace", counted)

    def spec(i: int, extra: int = 0) -> Spec:
        names = [f"t{j}" for j in range(rng.randint(1, 5) + extra)]
        if rng.random() < 0.3:
            names.append("shared")  # a name some other sources want too (no prefix below)
        prefix = "" if rng.random() < 0.3 else f"p{i}"
        tools = [
            types.Tool(name=n if prefix or n == "shared" else f"s{i}_{n}", input_schema={}) for n in names
        ]
        return Spec(f"s{i}", prefix, (0, i, f"s{i}"), frozenset(), Listing(tools=tools))

    cat = Catalog()
    live = {s.name: s for s in (spec(i) for i in rng.sample(range(12), 12))}
    for s in live.values():
        put(cat, s)
    check(cat, live)
    for _ in range(80):
        name = rng.choice(list(live))
        if rng.random() < 0.8:
            live[name] = relisted(live[name], rng)
        else:
            live[name] = spec(int(name[1:]), extra=rng.randint(0, 2))
        put(cat, live[name])
        check(cat, live)
    assert fast > 10  # the in-place path was taken, and matched the oracle every time


def test_relisting_one_source_of_a_large_catalog_keeps_the_others_entries() -> None:
    """Unchanged sources keep their entry objects, so their renderings are reused, not rebuilt."""
    cat = Catalog()
    for i in range(20):
        tools = [types.Tool(name=f"t{j}", input_schema={"type": "object"}) for j in range(50)]
        cat.set_source(f"s{i:02d}", Listing(tools=tools), prefix=f"s{i:02d}", rank=(0, i, f"s{i:02d}"))
    first = cat.render("mcp")
    keep = cat.tools["s00__t0"]
    cat.set_source(
        "s05",
        Listing(tools=[types.Tool(name="t0", input_schema={"type": "object"})]),
        prefix="s05",
        rank=(0, 5, "s05"),
    )
    assert cat.tools["s00__t0"] is keep
    again = cat.render("mcp")
    assert again is not first and len(again) == len(first) - 49
    assert again[0] is first[0]  # the same cached dict for an unchanged tool
    assert [r["name"] for r in again][:2] == ["s00__t0", "s00__t1"]
