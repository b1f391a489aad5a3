"""Catalog: safe names, schema normalisation, deterministic collision handling, lookups and renderings."""

from __future__ import annotations

import copy
import re
from typing import Any

import mcp.types as types
import pytest

from patchbay.catalog import (
    FORMATS,
    MAX_NAME,
    Catalog,
    Listing,
    normalize_schema,
    parse_items,
    parse_tools,
    safe_name,
)
from patchbay.errors import UnknownToolError

SAFE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OBJ = {"type": "object", "properties": {}}


def tool(name: str, description: str | None = None, **kw: Any) -> types.Tool:
    schema = kw.pop("input_schema", {"type": "object", "properties": {"x": {"type": "number"}}})
    return types.Tool(name=name, description=description, input_schema=schema, **kw)


def listing(*tools: str, **kw: Any) -> Listing:
    return Listing(tools=[tool(t, f"{t} tool") for t in tools], **kw)


def rank(i: int, name: str) -> tuple[int, int, str]:
    return (0, i, name)


# --- safe_name --------------------------------------------------------------------------------------------


def test_safe_name_joins_prefix_and_tool() -> None:
    assert safe_name("demo", "add") == "demo__add"
    assert safe_name("my-srv_2", "do_it-now") == "my-srv_2__do_it-now"


def test_safe_name_empty_prefix_gives_raw_name() -> None:
    assert safe_name("", "add") == "add"
    assert safe_name("", "a.b") == "a_b"


@pytest.mark.parametrize(
    ("prefix", "name", "expected"),
    [
        ("srv.v2", "read file", "srv_v2__read_file"),
        ("s", "a/b:c", "s__a_b_c"),
        ("s", "café", "s__caf_"),
        ("s", "日本", "s____"),
        ("s", "emoji🙂x", "s__emoji_x"),
        ("", "", "_"),
        ("", "...", "___"),
    ],
)
def test_safe_name_replaces_unsafe_characters(prefix: str, name: str, expected: str) -> None:
    assert safe_name(prefix, name) == expected


def test_safe_name_exactly_64_is_not_truncated() -> None:
    name = "t" * (MAX_NAME - len("srv__"))
    out = safe_name("srv", name)
    assert out == f"srv__{name}"
    assert len(out) == MAX_NAME


def test_safe_name_truncates_long_names_with_a_stable_hash() -> None:
    out = safe_name("srv", "t" * 100)
    assert len(out) == MAX_NAME
    assert SAFE.match(out)
    assert re.fullmatch(r"srv__t{50}_[0-9a-f]{8}", out)
    # the hash is content-based (not Python's salted hash()): the same in every process
    assert out == "srv__tttttttttttttttttttttttttttttttttttttttttttttttttt_d4571887"
    assert safe_name("srv", "t" * 100) == out


def test_safe_name_long_names_sharing_a_prefix_differ() -> None:
    common = "x" * 70
    a, b = safe_name("p", common + "_alpha"), safe_name("p", common + "_beta")
    assert a != b
    assert a[:55] == b[:55]
    assert len(a) == len(b) == MAX_NAME
    # names that only differ in an unsafe character are told apart too once they are long
    assert safe_name("p", common + ".z") != safe_name("p", common + "_z")


def _odd_inputs() -> list[tuple[str, str]]:
    pieces = [
        "",
        "a",
        "add",
        "x" * 63,
        "y" * 64,
        "z" * 65,
        "w" * 200,
        "with space",
        "tab\there",
        "new\nline",
        "dots.and.more",
        "slash/back\\slash",
        "quote'\"`",
        "ünïcödé",
        "日本語のツール",
        "🙂" * 40,
        "\u200b\u00a0",
        "\x00\x01\x7f",
        "-leading-dash",
        "__double__",
        "$(rm -rf)",
        "a" * 30 + "é" * 40,
    ]
    prefixes = ["", "p", "demo", "srv.v2", "my server", "P" * 70, "ü"]
    return [(p, n) for p in prefixes for n in pieces]


def test_safe_name_always_matches_the_llm_pattern() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for prefix, name in _odd_inputs():
        out = safe_name(prefix, name)
        assert SAFE.match(out), (prefix, name, out)
        assert safe_name(prefix, name) == out
        if len(out) == MAX_NAME and len(f"{prefix}__{name}") > MAX_NAME:
            seen.setdefault(out, (prefix, name))
            assert seen[out] == (prefix, name), f"hash collision for {out}"


def test_safe_name_long_name_with_lone_surrogate() -> None:
    out = safe_name("p", "\ud800" * 70)
    assert SAFE.match(out)


def test_catalog_survives_tool_name_with_lone_surrogate() -> None:
    tools, _ = parse_tools([{"name": "bad\ud800" * 30, "inputSchema": {}}, {"name": "ok"}], "s")
    cat = Catalog()
    cat.set_source("s", Listing(tools=tools), prefix="s", rank=rank(0, "s"))
    assert "s__ok" in cat.tools


# --- normalize_schema --------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", [{}, None, [], ["a"], "object", 3, True])
def test_normalize_schema_non_schemas(schema: Any) -> None:
    assert normalize_schema(schema) == OBJ


def test_normalize_schema_missing_type() -> None:
    assert normalize_schema({"properties": {"a": {"type": "string"}}}) == {
        "type": "object",
        "properties": {"a": {"type": "string"}},
    }


def test_normalize_schema_array_type_becomes_object() -> None:
    out = normalize_schema({"type": "array", "items": {"type": "string"}})
    assert out["type"] == "object"
    assert out["properties"] == {}
    assert out["items"] == {"type": "string"}


@pytest.mark.parametrize("props", [None, [], ["a"], "a", 1])
def test_normalize_schema_properties_not_a_dict(props: Any) -> None:
    assert normalize_schema({"type": "object", "properties": props}) == OBJ


@pytest.mark.parametrize("required", ["a", ["a", 1], [None], {"a": True}, 1, None])
def test_normalize_schema_bad_required_is_dropped(required: Any) -> None:
    out = normalize_schema({"type": "object", "properties": {"a": {}}, "required": required})
    assert "required" not in out
    assert out == {"type": "object", "properties": {"a": {}}}


def test_normalize_schema_keeps_a_good_schema_and_does_not_mutate() -> None:
    good = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
        "$schema": "http://json-schema.org/draft-07/schema#",
    }
    original = copy.deepcopy(good)
    out = normalize_schema(good)
    assert out == original
    assert out is not good
    sloppy = {"type": "array", "properties": [], "required": "x"}
    sloppy_copy = copy.deepcopy(sloppy)
    normalize_schema(sloppy)
    assert sloppy == sloppy_copy


def test_normalize_schema_empty_required_list_is_kept() -> None:
    assert normalize_schema({"required": []}) == {"type": "object", "properties": {}, "required": []}


# --- parse_tools / parse_items ------------------------------------------------------------------------------


def test_parse_tools_skips_bad_entries_and_reports_them() -> None:
    raw = [
        {"name": "good", "description": "d", "inputSchema": {"type": "object", "properties": {}}},
        {"description": "no name"},
        {"name": "", "inputSchema": {}},
        {"name": 42},
        "just a string",
        None,
        {"name": "bad_desc", "description": 5, "inputSchema": {}},
        {"name": "sloppy"},
        {"name": "arr", "inputSchema": {"type": "array"}},
        {"name": "listy", "inputSchema": [1, 2]},
        {"name": "out", "inputSchema": {}, "outputSchema": "nope"},
    ]
    tools, problems = parse_tools(raw, "src")
    assert [t.name for t in tools] == ["good", "sloppy", "arr", "listy", "out"]
    assert len(problems) == 6
    assert sum("without a valid name" in p for p in problems) == 5
    assert any("skipped tool 'bad_desc'" in p for p in problems)
    by_name = {t.name: t for t in tools}
    for name in ("sloppy", "arr", "listy", "out"):
        assert by_name[name].input_schema == OBJ
    assert by_name["out"].output_schema is None
    assert by_name["good"].description == "d"


def test_parse_tools_keeps_extra_fields() -> None:
    tools, problems = parse_tools(
        [
            {
                "name": "t",
                "title": "T",
                "inputSchema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                "outputSchema": {"type": "object"},
                "annotations": {"readOnlyHint": True},
            }
        ],
        "src",
    )
    assert problems == []
    (t,) = tools
    assert t.title == "T"
    assert t.input_schema["required"] == ["a"]
    assert t.output_schema == {"type": "object"}
    assert t.annotations is not None and t.annotations.read_only_hint is True


def test_parse_items() -> None:
    resources = parse_items(
        [{"uri": "test://a", "name": "a"}, {"name": "no-uri"}, "junk"], types.Resource, "src"
    )
    assert [r.uri for r in resources] == ["test://a"]
    templates = parse_items([{"uriTemplate": "test://{x}", "name": "t"}, {}], types.ResourceTemplate, "src")
    assert [t.uri_template for t in templates] == ["test://{x}"]
    prompts = parse_items([{"name": "p", "arguments": [{"name": "a"}]}, {"arguments": []}], types.Prompt, "s")
    assert [p.name for p in prompts] == ["p"]


# --- Catalog: names and collisions ------------------------------------------------------------------------


def test_set_source_exposes_prefixed_tools() -> None:
    cat = Catalog()
    added, removed = cat.set_source("demo", listing("add", "sub"), prefix="demo", rank=rank(0, "demo"))
    assert added == ["demo__add", "demo__sub"]
    assert removed == []
    entry = cat.tool("demo__add")
    assert (entry.name, entry.source, entry.original) == ("demo__add", "demo", "add")
    assert entry.tool.name == "add"
    assert cat.has_source("demo")
    assert [e.name for e in cat.tools_of("demo")] == ["demo__add", "demo__sub"]
    assert cat.tools_of("other") == []
    assert cat.conflicts == {}


def test_set_source_again_reports_added_and_removed() -> None:
    cat = Catalog()
    cat.set_source("demo", listing("add", "sub"), prefix="demo", rank=rank(0, "demo"))
    v = cat.version
    added, removed = cat.set_source("demo", listing("sub", "mul"), prefix="demo", rank=rank(0, "demo"))
    assert added == ["demo__mul"]
    assert removed == ["demo__add"]
    assert cat.version == v + 1
    assert cat.remove_source("demo") == ([], ["demo__mul", "demo__sub"])
    assert cat.tools == {}
    assert not cat.has_source("demo")
    v = cat.version
    assert cat.remove_source("demo") == ([], [])
    assert cat.version == v  # nothing to rebuild


@pytest.mark.parametrize("order", ["winner_first", "loser_first"])
def test_collision_lower_rank_wins_regardless_of_order(order: str) -> None:
    cat = Catalog()
    calls = [
        ("first", Listing(tools=[tool("add", "first's add")]), rank(0, "first")),
        ("second", Listing(tools=[tool("add", "second's add"), tool("own")]), rank(1, "second")),
    ]
    if order == "loser_first":
        calls.reverse()
    for name, lst, rk in calls:
        cat.set_source(name, lst, prefix="shared", rank=rk)
    assert set(cat.tools) == {"shared__add", "shared__own"}
    assert cat.tool("shared__add").source == "first"
    assert cat.tool("shared__add").tool.description == "first's add"
    assert cat.tool("shared__own").source == "second"
    assert list(cat.conflicts) == ["second"]
    (note,) = cat.conflicts["second"]
    assert "'add'" in note
    assert "'shared__add'" in note
    assert "'first'" in note
    assert "not exposed" in note
    assert [e.original for e in cat.tools_of("second")] == ["own"]


def test_collision_rank_tie_breaks_on_name() -> None:
    cat = Catalog()
    cat.set_source("zz", listing("t"), prefix="", rank=(0, 0, "zz"))
    cat.set_source("aa", listing("t"), prefix="", rank=(0, 0, "aa"))
    assert cat.tool("t").source == "aa"
    assert list(cat.conflicts) == ["zz"]


def test_removing_the_winner_lets_the_loser_in() -> None:
    cat = Catalog()
    cat.set_source("b", listing("add"), prefix="", rank=rank(1, "b"))
    cat.set_source("a", listing("add"), prefix="", rank=rank(0, "a"))
    assert cat.tool("add").source == "a"
    assert "b" in cat.conflicts
    cat.remove_source("a")
    assert cat.tool("add").source == "b"
    assert cat.conflicts == {}


def test_collision_from_unsafe_characters_within_one_source() -> None:
    cat = Catalog()
    cat.set_source("s", listing("a.b", "a_b"), prefix="s", rank=rank(0, "s"))
    assert cat.tool("s__a_b").original == "a.b"
    assert len(cat.conflicts["s"]) == 1
    assert "'a_b'" in cat.conflicts["s"][0]


def test_different_prefixes_do_not_collide() -> None:
    cat = Catalog()
    cat.set_source("a", listing("add"), prefix="a", rank=rank(0, "a"))
    cat.set_source("b", listing("add"), prefix="b", rank=rank(1, "b"))
    assert set(cat.tools) == {"a__add", "b__add"}
    assert cat.conflicts == {}


def test_hidden_matches_original_and_exposed_names() -> None:
    cat = Catalog()
    cat.set_source(
        "demo",
        listing("add", "sub", "mul", "a.b"),
        prefix="demo",
        rank=rank(0, "demo"),
        hidden=["add", "demo__sub"],
    )
    assert set(cat.tools) == {"demo__mul", "demo__a_b"}
    cat.set_source("demo", listing("add", "a.b"), prefix="demo", rank=rank(0, "demo"), hidden=["demo__a_b"])
    assert set(cat.tools) == {"demo__add"}
    cat.set_source("demo", listing("a.b"), prefix="demo", rank=rank(0, "demo"), hidden=["a.b"])
    assert cat.tools == {}


def test_hidden_winner_lets_the_other_source_in() -> None:
    cat = Catalog()
    cat.set_source("a", listing("t"), prefix="", rank=rank(0, "a"), hidden=["t"])
    cat.set_source("b", listing("t"), prefix="", rank=rank(1, "b"))
    assert cat.tool("t").source == "b"
    assert cat.conflicts == {}


def test_hidden_loser_is_no_conflict() -> None:
    cat = Catalog()
    cat.set_source("a", listing("t"), prefix="", rank=rank(0, "a"))
    cat.set_source("b", listing("t"), prefix="", rank=rank(1, "b"), hidden=["t"])
    assert cat.tool("t").source == "a"
    assert cat.conflicts == {}


# --- lookups ------------------------------------------------------------------------------------------------


@pytest.fixture
def demo() -> Catalog:
    cat = Catalog()
    cat.set_source("demo", listing("add", "subtract", "word_count"), prefix="demo", rank=rank(0, "demo"))
    return cat


def test_unknown_tool_suggests_prefixed_name(demo: Catalog) -> None:
    with pytest.raises(UnknownToolError) as ei:
        demo.tool("add")
    assert ei.value.suggestions == ["demo__add"]
    assert ei.value.name == "add"
    assert ei.value.kind == "tool"
    assert str(ei.value) == "unknown tool 'add'; did you mean 'demo__add'?"


def test_unknown_tool_suggests_close_match_for_typo(demo: Catalog) -> None:
    with pytest.raises(UnknownToolError) as ei:
        demo.tool("demo__ad")
    assert ei.value.suggestions[0] == "demo__add"
    assert "did you mean 'demo__add'" in str(ei.value)


def test_unknown_tool_without_suggestions(demo: Catalog) -> None:
    with pytest.raises(UnknownToolError) as ei:
        demo.tool("zzzzzzzz")
    assert ei.value.suggestions == []
    assert str(ei.value) == "unknown tool 'zzzzzzzz'"
    assert isinstance(ei.value, LookupError)


def test_unknown_tool_in_empty_catalog() -> None:
    with pytest.raises(UnknownToolError):
        Catalog().tool("anything")


def test_mcp_tools_carry_exposed_names(demo: Catalog) -> None:
    out = demo.mcp_tools()
    assert [t.name for t in out] == ["demo__add", "demo__subtract", "demo__word_count"]
    assert all(isinstance(t, types.Tool) for t in out)
    assert demo.tool("demo__add").tool.name == "add"  # the stored tool keeps its original name


# --- renderings ---------------------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.fixture
def rich() -> Catalog:
    cat = Catalog()
    cat.set_source(
        "one",
        Listing(
            tools=[
                types.Tool(
                    name="add",
                    title="Adder",
                    description="Add numbers",
                    input_schema=SCHEMA,
                    annotations=types.ToolAnnotations(read_only_hint=True),
                ),
                types.Tool(name="titled", title="Only a title", input_schema=OBJ),
                types.Tool(name="bare", input_schema=OBJ),
            ]
        ),
        prefix="one",
        rank=rank(0, "one"),
    )
    cat.set_source("two", Listing(tools=[tool("x", "X")]), prefix="two", rank=rank(1, "two"))
    return cat


def test_render_mcp_shape(rich: Catalog) -> None:
    out = rich.render("mcp")
    assert out[0] == {
        "name": "one__add",
        "title": "Adder",
        "description": "Add numbers",
        "inputSchema": SCHEMA,
        "annotations": {"readOnlyHint": True},
    }
    assert out[2] == {"name": "one__bare", "inputSchema": OBJ}
    assert all("input_schema" not in r for r in out)
    # each rendering validates back into an MCP Tool
    assert [types.Tool.model_validate(r).name for r in out] == [
        "one__add",
        "one__titled",
        "one__bare",
        "two__x",
    ]
    assert rich.render() is out  # mcp is the default


def test_render_openai_shape(rich: Catalog) -> None:
    out = rich.render("openai")
    assert out[0] == {
        "type": "function",
        "function": {"name": "one__add", "description": "Add numbers", "parameters": SCHEMA},
    }
    assert out[1]["function"]["description"] == "Only a title"
    assert out[2] == {
        "type": "function",
        "function": {"name": "one__bare", "description": "", "parameters": OBJ},
    }
    for r in out:
        assert set(r) == {"type", "function"}
        assert set(r["function"]) == {"name", "description", "parameters"}
        assert SAFE.match(r["function"]["name"])


def test_render_anthropic_shape(rich: Catalog) -> None:
    out = rich.render("anthropic")
    assert out[0] == {"name": "one__add", "description": "Add numbers", "input_schema": SCHEMA}
    assert out[1] == {"name": "one__titled", "description": "Only a title", "input_schema": OBJ}
    assert out[2] == {"name": "one__bare", "description": "", "input_schema": OBJ}
    assert all(set(r) == {"name", "description", "input_schema"} for r in out)


def test_render_is_cached_until_the_catalog_changes(rich: Catalog) -> None:
    cached = {fmt: rich.render(fmt) for fmt in FORMATS}
    for fmt in FORMATS:
        assert rich.render(fmt) is cached[fmt]
    rich.set_source("three", listing("y"), prefix="three", rank=rank(2, "three"))
    for fmt in FORMATS:
        fresh = rich.render(fmt)
        assert fresh is not cached[fmt]
        assert len(fresh) == len(cached[fmt]) + 1
        assert rich.render(fmt) is fresh
    before = rich.render("anthropic")
    rich.remove_source("three")
    assert rich.render("anthropic") is not before
    assert len(rich.render("anthropic")) == len(before) - 1


def test_render_filters_by_source(rich: Catalog) -> None:
    for fmt in FORMATS:
        full = rich.render(fmt)
        one = rich.render(fmt, source="one")
        two = rich.render(fmt, source="two")
        assert len(one) == 3 and len(two) == 1
        assert one == full[:3] and two == full[3:]
        assert all(any(r is f for f in full) for r in one + two)  # same cached dicts
        assert rich.render(fmt, source="nobody") == []
    assert [r["name"] for r in rich.render("anthropic", source="two")] == ["two__x"]


@pytest.mark.parametrize("fmt", ["xml", "MCP", "", "gemini"])
def test_render_unknown_format(rich: Catalog, fmt: str) -> None:
    with pytest.raises(ValueError, match=r"unknown format .*mcp, openai, anthropic"):
        rich.render(fmt)  # type: ignore[arg-type]


def test_render_empty_catalog() -> None:
    assert all(Catalog().render(fmt) == [] for fmt in FORMATS)


# --- prompts and resources ----------------------------------------------------------------------------------


def test_prompts_are_namespaced() -> None:
    cat = Catalog()
    greet = types.Prompt(name="greet", arguments=[types.PromptArgument(name="who", required=True)])
    cat.set_source("a", Listing(prompts=[greet]), prefix="a", rank=rank(0, "a"))
    cat.set_source("b", Listing(prompts=[types.Prompt(name="greet")]), prefix="b", rank=rank(1, "b"))
    assert set(cat.prompts) == {"a__greet", "b__greet"}
    entry = cat.prompt("a__greet")
    assert (entry.name, entry.source, entry.original) == ("a__greet", "a", "greet")
    assert entry.prompt is greet
    with pytest.raises(UnknownToolError) as ei:
        cat.prompt("greet")
    assert ei.value.kind == "prompt"
    assert str(ei.value).startswith("unknown prompt 'greet'")
    assert set(ei.value.suggestions) == {"a__greet", "b__greet"}


def test_prompt_collision_is_reported() -> None:
    cat = Catalog()
    cat.set_source("late", Listing(prompts=[types.Prompt(name="p")]), prefix="", rank=rank(1, "late"))
    cat.set_source("early", Listing(prompts=[types.Prompt(name="p")]), prefix="", rank=rank(0, "early"))
    assert cat.prompt("p").source == "early"
    assert any("prompt 'p'" in n and "'early'" in n for n in cat.conflicts["late"])


def test_resources_keyed_by_uri_with_collision_reported() -> None:
    cat = Catalog()
    shared = "test://static/resource/1"
    cat.set_source(
        "second",
        Listing(
            resources=[types.Resource(name="res one", uri=shared), types.Resource(name="own", uri="test://b")]
        ),
        prefix="second",
        rank=rank(1, "second"),
    )
    cat.set_source(
        "first",
        Listing(resources=[types.Resource(name="r", uri=shared)]),
        prefix="first",
        rank=rank(0, "first"),
    )
    assert set(cat.resources) == {shared, "test://b"}
    entry = cat.resources[shared]
    assert entry.source == "first"
    assert entry.uri == shared
    assert entry.name == "first__r"
    assert cat.resources["test://b"].name == "second__own"
    (note,) = cat.conflicts["second"]
    assert shared in note and "'first'" in note
    assert cat.resource_owner(shared) == "first"
    assert cat.resource_owner("test://b") == "second"
    cat.remove_source("first")
    assert cat.resource_owner(shared) == "second"
    assert cat.conflicts == {}


def test_resource_owner_matches_templates() -> None:
    cat = Catalog()
    cat.set_source(
        "everything",
        Listing(
            resources=[types.Resource(name="fixed", uri="test://echo/fixed")],
            templates=[
                types.ResourceTemplate(name="echo", uri_template="test://echo/{value}"),
                types.ResourceTemplate(name="pair", uri_template="db://{table}.v1/{id}"),
            ],
        ),
        prefix="ev",
        rank=rank(0, "everything"),
    )
    cat.set_source(
        "other",
        Listing(templates=[types.ResourceTemplate(name="echo", uri_template="test://echo/{value}")]),
        prefix="ot",
        rank=rank(1, "other"),
    )
    assert cat.resource_owner("test://echo/hello") == "everything"
    assert cat.resource_owner("test://echo/a/b c") == "everything"
    assert cat.resource_owner("test://echo/fixed") == "everything"
    assert cat.resource_owner("db://users.v1/42") == "everything"
    # the same template from a lower-ranked source is a conflict, not a second (unreachable) entry
    assert [t.name for t in cat.templates] == ["ev__echo", "ev__pair"]
    assert any("test://echo/{value}" in note for note in cat.conflicts["other"])
    for uri in ("test://echo/", "test://echoX", "db://usersXv1/42", "other://echo/x"):
        with pytest.raises(UnknownToolError) as ei:
            cat.resource_owner(uri)
        assert ei.value.kind == "resource"
        assert str(ei.value).startswith(f"unknown resource {uri!r}")
    cat.remove_source("everything")
    assert cat.resource_owner("test://echo/hello") == "other"


def test_unknown_resource_suggests_close_uris() -> None:
    cat = Catalog()
    cat.set_source(
        "s",
        Listing(resources=[types.Resource(name="r", uri="test://static/1")]),
        prefix="s",
        rank=rank(0, "s"),
    )
    with pytest.raises(UnknownToolError) as ei:
        cat.resource_owner("test://static/2")
    assert ei.value.suggestions == ["test://static/1"]


def test_rebuild_is_independent_of_insertion_order() -> None:
    def build(order: list[int]) -> Catalog:
        specs = [
            ("a", listing("x", "y"), "p", rank(0, "a")),
            ("b", listing("y", "z"), "p", rank(1, "b")),
            ("c", listing("z", "x", "w"), "p", rank(2, "c")),
        ]
        cat = Catalog()
        for i in order:
            name, lst, prefix, rk = specs[i]
            cat.set_source(name, lst, prefix=prefix, rank=rk)
        return cat

    expected = build([0, 1, 2])
    for order in ([2, 1, 0], [1, 2, 0], [2, 0, 1]):
        cat = build(order)
        assert {n: e.source for n, e in cat.tools.items()} == {n: e.source for n, e in expected.tools.items()}
        assert cat.conflicts == expected.conflicts
        assert sorted(cat.render("openai"), key=str) == sorted(expected.render("openai"), key=str)
    assert {n: e.source for n, e in expected.tools.items()} == {
        "p__x": "a",
        "p__y": "a",
        "p__z": "b",
        "p__w": "c",
    }
    assert len(expected.conflicts["b"]) == 1 and len(expected.conflicts["c"]) == 2
