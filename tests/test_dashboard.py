"""The web dashboard (``/``) in a real headless Chromium: Debian's ``chromium`` driven by Playwright.

One browser and three real ``patchbay serve`` processes (an open hub, one behind a bearer token, and one
with the demo server alone, for the screenshot) are shared by the module. Each test opens a fresh page and
acts as a person would: reads the server cards, searches the catalog, fills the form generated from a
tool's input schema, adds and removes a server, and watches state changes arrive over /api/events without
reloading.

``PATCHBAY_SCREENSHOT=docs/dashboard.png pytest tests/test_dashboard.py -k screenshot`` refreshes the
screenshot in the docs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio

from patchbay.server.security import Guard
from tests.conftest import MISBEHAVING, bad
from tests.test_serve import Served, start_serve, stop_serve

try:
    from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect
except ImportError:  # pragma: no cover - `make test` installs it (the dev extras)
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "dashboard-t0ken-for-tests"
DEMO = {"command": "${PATCHBAY_PYTHON}", "args": ["-m", "patchbay.demo"]}
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.skipif(async_playwright is None, reason="playwright is not installed: run `make test`"),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Chromium is not installed (apt-get install chromium): run `make test`",
    ),
    pytest.mark.asyncio(loop_scope="module"),
]


async def serve(tmp: Path, servers: dict[str, Any], token: str = "") -> Served:
    config = tmp / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": servers}, indent=2))
    # An empty PATCHBAY_TOKEN means no token, whatever the environment the tests run in has.
    return await start_serve(config, env={"PATCHBAY_TOKEN": token}, token=token or None)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser(hubs: Hubs) -> AsyncIterator[Browser]:  # the hubs start while Chromium does
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


class Hubs:
    """The module's ``patchbay serve`` processes, started in the background: the open hub at once, the
    others once it is up (so they start while the first tests run); a test waits only for the one it uses.
    """

    SERVERS: dict[str, tuple[dict[str, Any], str]] = {
        "open": ({"demo": DEMO, "mb": bad()}, ""),  # the demo server and the misbehaving test server
        "locked": ({"mb": bad()}, TOKEN),  # behind a bearer token
        "demo": ({"demo": DEMO}, ""),  # the demo server alone, for the screenshot
    }

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        first: asyncio.Future[Served] | None = None
        self.tasks: dict[str, asyncio.Future[Served]] = {}
        for name, (servers, token) in self.SERVERS.items():
            self.tasks[name] = asyncio.ensure_future(self._start(tmp.mktemp(name), servers, token, first))
            first = first or self.tasks[name]

    @staticmethod
    async def _start(
        tmp: Path, servers: dict[str, Any], token: str, after: asyncio.Future[Served] | None
    ) -> Served:
        if after is not None:
            await asyncio.wait([after])
        return await serve(tmp, servers, token)

    async def get(self, name: str) -> Served:
        return await self.tasks[name]

    async def close(self) -> None:
        await asyncio.wait(self.tasks.values())
        served = [t.result() for t in self.tasks.values() if t.exception() is None]
        await asyncio.gather(*(stop_serve(s) for s in served))
        for s in served:
            stderr = (await s.proc.stderr.read()).decode()  # type: ignore[union-attr]
            assert "Traceback" not in stderr, stderr
            assert TOKEN not in stderr


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def hubs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hubs]:
    started = Hubs(tmp_path_factory)
    try:
        yield started
    finally:
        await started.close()


@pytest_asyncio.fixture(loop_scope="module")
async def hub(hubs: Hubs) -> Served:
    return await hubs.get("open")


@pytest_asyncio.fixture(loop_scope="module")
async def locked(hubs: Hubs) -> Served:
    return await hubs.get("locked")


class Tab:
    """A page plus the JavaScript errors it logged (a test fails on any)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: ConsoleMessage) -> None:
        # Chromium logs every non-2xx fetch as "Failed to load resource"; the tests provoke those on purpose.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(msg.text)


async def open_tab(browser: Browser, url: str, viewport: dict[str, int] = LAPTOP) -> Tab:
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    tab = Tab(await context.new_page())
    await tab.page.goto(url)
    return tab


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, hub: Served) -> AsyncIterator[Page]:
    tab = await open_tab(browser, f"{hub.base}/")
    yield tab.page
    await tab.page.context.close()
    assert tab.errors == []


def card(page: Page, name: str) -> Any:
    return page.get_by_role("article", name=name, exact=True)


async def expect_state(page: Page, name: str, state: str, timeout: float = 15_000) -> None:
    await expect(card(page, name).locator(".badge")).to_have_text(state, timeout=timeout)


async def open_tool(page: Page, name: str) -> Any:
    row = page.locator(f"details.tool[data-tool='{name}']")
    await row.locator("summary").click()
    await expect(row.get_by_role("button", name="Call tool")).to_be_visible()
    return row


# --- the page -------------------------------------------------------------------------------------------


async def test_servers_show_state_protocol_tools_and_command(page: Page) -> None:
    await expect_state(page, "demo", "ready")
    await expect_state(page, "mb", "ready")
    mb = card(page, "mb")
    await expect(mb).to_contain_text("misbehaving 1.0")
    await expect(mb.locator(".fact", has_text="Protocol")).to_contain_text("2025-11-25")
    await expect(mb.locator(".fact", has_text="Tools")).to_contain_text("11")
    await expect(mb.locator(".fact", has_text="Restarts")).to_contain_text("0")
    await expect(mb.locator(".cmd")).to_contain_text("misbehaving_server.py")
    await expect(card(page, "demo").locator(".fact", has_text="Tools")).to_contain_text("10")
    await expect(page.locator("#stat-servers")).to_have_text("2 / 2")
    await expect(page.locator("#stat-tools")).to_have_text("21")
    await expect(page.locator("#agent-list")).to_contain_text("No remote agents")
    await expect(page.locator("#connection")).to_have_text("Live")


async def test_a_failed_server_shows_its_last_error_and_stderr(page: Page, hub: Served) -> None:
    await expect_state(page, "mb", "ready")
    async with hub.http() as http:  # added behind the page's back: it appears live
        spec = bad("--exit-at-start", "3", maxRestarts=0)
        assert (await http.post("/api/servers", json={"name": "broken", "spec": spec})).status_code == 201
    try:
        await expect_state(page, "broken", "failed")
        broken = card(page, "broken")
        await expect(broken.locator(".card-error")).to_contain_text("Last error exited with status 3")
        await broken.get_by_text("stderr (last 1 line)").click()
        await expect(broken.locator("pre.stderr")).to_have_text("fatal: exiting at start")
        await expect(page.locator("#stat-servers")).to_have_text("2 / 3")
    finally:
        async with hub.http() as http:
            assert (await http.delete("/api/servers/broken")).status_code == 204
    await expect(card(page, "broken")).to_have_count(0)


async def test_search_then_call_a_tool_through_its_generated_form(page: Page) -> None:
    await expect(page.locator("details.tool")).to_have_count(21)
    await page.get_by_label("Search tools").fill("add two")
    await expect(page.locator("details.tool:visible")).to_have_count(2)
    await expect(page.locator("#tool-count")).to_have_text("2 of 21 tools")
    row = await open_tool(page, "demo__add")
    await expect(row).to_contain_text("Add two numbers and return the sum.")
    a = row.get_by_role("spinbutton", name=re.compile(r"^a \(required\)"))
    b = row.get_by_role("spinbutton", name=re.compile(r"^b \(required\)"))
    await expect(row.locator(".req")).to_have_count(2)  # the visible required markers
    await a.fill("2")
    await row.get_by_role("button", name="Call tool").click()
    assert await b.evaluate("el => el.validity.valueMissing")  # the browser refuses an empty required field
    await expect(row.locator(".result")).to_be_hidden()
    await b.fill("3.5")
    await row.get_by_role("button", name="Call tool").click()
    result = row.locator(".result")
    await expect(result.locator(".badge")).to_have_text("Result")
    await expect(result.locator(".structured")).to_contain_text('"result": 5.5')
    await expect(result).not_to_have_class(re.compile("result-error"))


async def test_enums_defaults_and_text_areas_come_from_the_schema(page: Page) -> None:
    await page.get_by_label("Search tools").fill("hash")
    row = await open_tool(page, "demo__hash_text")
    algorithm = row.get_by_role("combobox", name=re.compile(r"^algorithm"))
    await expect(algorithm.locator("option:checked")).to_have_text("sha256")  # the schema's default
    await expect(algorithm.locator("option")).to_have_text(["— not set —", "sha256", "sha1", "md5"])
    text = row.get_by_role("textbox", name=re.compile(r"^text \(required\)"))
    assert await text.evaluate("el => el.tagName") == "TEXTAREA"
    await text.fill("abc")
    await algorithm.select_option("md5")
    await row.get_by_role("button", name="Call tool").click()
    await expect(row.locator(".result .structured")).to_contain_text("900150983cd24fb0d6963f7d28e17f72")
    # integer with a default, and the JSON mode
    await page.get_by_label("Search tools").fill("uuid")
    row = await open_tool(page, "demo__uuid")
    await expect(row.get_by_role("spinbutton", name=re.compile(r"^count"))).to_have_value("1")
    await row.get_by_text("JSON", exact=True).click()
    arguments = row.get_by_role("textbox", name=re.compile("^Arguments"))
    await expect(arguments).to_have_value(re.compile(r'"count": 1'))
    await arguments.fill('{"count": 3}')
    await row.get_by_role("button", name="Call tool").click()
    await expect(row.locator(".result .structured")).to_contain_text('"uuids"')
    uuids = json.loads(await row.locator(".result .structured pre").text_content() or "{}")["uuids"]
    assert len(uuids) == 3


async def test_tool_errors_and_hub_errors_are_shown_as_errors(page: Page) -> None:
    await page.get_by_label("Search tools").fill("mb__")
    row = await open_tool(page, "mb__fail")
    await expect(row).to_contain_text("This tool takes no arguments.")
    await row.get_by_role("button", name="Call tool").click()
    result = row.locator(".result")
    await expect(result).to_have_class(re.compile("result-error"))
    await expect(result.locator(".badge")).to_have_text("Tool error")
    await expect(result.get_by_role("alert")).to_contain_text("tool failed on purpose")
    row = await open_tool(page, "mb__rpc_error")
    await row.get_by_role("button", name="Call tool").click()
    result = row.locator(".result")
    await expect(result.locator(".badge")).to_have_text("HTTP 502")
    await expect(result.get_by_role("alert")).to_contain_text("returned error -32050")


# --- live state ------------------------------------------------------------------------------------------


async def test_state_changes_arrive_live_without_reloading(page: Page, hub: Served) -> None:
    await expect_state(page, "mb", "ready")
    await page.evaluate("window.__sameDocument = true")
    async with hub.http() as http:  # someone else disables it: the page hears it from /api/events
        assert (await http.post("/api/servers/mb/disable")).status_code == 200
    await expect_state(page, "mb", "disabled")
    await expect(page.locator("details.tool[data-tool='mb__echo']")).to_have_count(0)
    await expect(page.locator("#stat-tools")).to_have_text("10")
    await expect(page.locator("#toasts")).to_contain_text("mb is disabled")
    await expect(card(page, "mb").get_by_role("button", name="Restart mb")).to_be_disabled()
    # and back, from the page's own button
    await card(page, "mb").get_by_role("button", name="Enable mb").click()
    await expect_state(page, "mb", "ready")
    await expect(page.locator("details.tool[data-tool='mb__echo']")).to_have_count(1)
    await expect(page.locator("#stat-tools")).to_have_text("21")
    await expect(card(page, "mb").get_by_role("button", name="Disable mb")).to_be_enabled()
    assert await page.evaluate("window.__sameDocument") is True


async def test_add_a_server_from_the_form_then_remove_it(page: Page, hub: Served) -> None:
    await expect_state(page, "mb", "ready")
    await page.get_by_role("button", name="Add server").click()
    dialog = page.get_by_role("dialog", name="Add a server")
    await expect(dialog).to_be_visible()
    # a bad entry first: the hub's message is shown and nothing is added
    await dialog.get_by_label("Name").fill("extra")
    await dialog.get_by_text("JSON", exact=True).click()
    await dialog.get_by_label("Config entry (JSON)").fill('{"command": "x", "url": "http://127.0.0.1:1/mcp"}')
    await dialog.get_by_role("button", name="Add server").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("not both")
    # then a good one, from the command form
    await dialog.get_by_text("Local command", exact=True).click()
    await dialog.get_by_label(re.compile("^Command")).fill(sys.executable)
    await dialog.get_by_label("Arguments").fill(f"{MISBEHAVING}\n--echo-env\nEXTRA_SECRET")
    await dialog.get_by_label("Environment").fill("EXTRA_SECRET=s3cret-value")
    await dialog.get_by_role("button", name="Add server").click()
    await expect(dialog).to_be_hidden()
    await expect_state(page, "extra", "ready")
    await expect(page.locator("details.tool[data-tool='extra__whoami']")).to_have_count(1)
    await expect(card(page, "extra").locator(".cmd-env")).to_have_text("env: EXTRA_SECRET")
    await expect(page.locator("main")).not_to_contain_text("s3cret-value")  # secrets stay redacted
    async with hub.http() as http:
        spec = (await http.get("/api/servers/extra")).json()["spec"]
    assert spec["env"] == {"EXTRA_SECRET": "***"} and spec["args"][1:] == ["--echo-env", "EXTRA_SECRET"]
    # remove, with the inline confirmation
    extra = card(page, "extra")
    await extra.get_by_role("button", name="Remove extra").click()
    await extra.get_by_role("button", name="Keep it").click()
    await expect(extra).to_be_visible()
    await extra.get_by_role("button", name="Remove extra").click()
    await extra.get_by_role("button", name="Yes, remove").click()
    await expect(card(page, "extra")).to_have_count(0)
    await expect(page.locator("details.tool[data-tool='extra__whoami']")).to_have_count(0)


async def test_untrusted_text_is_never_markup(page: Page, hub: Served) -> None:
    """A description with HTML in it (tools come from untrusted servers) is shown as text."""
    await expect_state(page, "mb", "ready")
    markup = '<img src=x onerror="window.pwned=1">'
    async with hub.http() as http:
        r = await http.post("/api/tools/mb__set_tools/call", json={"arguments": {"names": [f"x{markup}"]}})
        assert r.status_code == 200, r.text
    try:
        row = page.locator("details.tool[data-tool^='mb__x']")
        await expect(row).to_have_count(1)  # arrived live (tools/list_changed → catalog event)
        await expect(row.locator(".tool-desc")).to_have_text(f"Echo-like tool x{markup}.")
        await expect(page.locator("img")).to_have_count(0)
        assert await page.evaluate("window.pwned") is None
    finally:
        async with hub.http() as http:
            await http.post("/api/tools/mb__set_tools/call", json={"arguments": {"names": []}})


# --- the token -------------------------------------------------------------------------------------------


async def test_page_and_assets_load_without_a_token_but_the_api_needs_one(locked: Served) -> None:
    async with httpx2.AsyncClient(base_url=locked.base, timeout=10) as anon:
        page = await anon.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "Content-Security-Policy" in page.headers
        for asset in ("/dashboard/js/app.js", "/dashboard/dashboard.css", "/dashboard/icon.svg"):
            assert (await anon.get(asset)).status_code == 200, asset
        assert (await anon.get("/dashboard/nope.js")).status_code == 404
        assert (await anon.get("/api/servers")).status_code == 401
        assert (await anon.get("/docs")).status_code == 401
    guard = Guard(lambda *a: None, tokens=["x"], open_paths={"/"}, open_prefixes=("/dashboard/",))  # type: ignore[arg-type, return-value]
    assert guard.is_open("/") and guard.is_open("/dashboard/js/app.js")
    assert not guard.is_open("/dashboard/../api/servers") and not guard.is_open("/dashboard")
    assert not guard.is_open("/api/servers") and not guard.is_open("/dashboardx/a")


async def test_the_page_asks_for_the_token_then_works(browser: Browser, locked: Served) -> None:
    tab = await open_tab(browser, f"{locked.base}/")
    page = tab.page
    try:
        dialog = page.get_by_role("dialog", name="Access token required")
        await expect(dialog).to_be_visible()
        await expect(page.locator("#connection")).to_have_text("Token required")
        await dialog.get_by_label("Access token").fill("not-the-token")
        await dialog.get_by_role("button", name="Continue").click()
        await expect(dialog).to_contain_text("That token was not accepted")
        await dialog.get_by_label("Access token").fill(TOKEN)
        await dialog.get_by_role("button", name="Continue").click()
        await expect(dialog).to_be_hidden()
        await expect_state(page, "mb", "ready")
        await expect(page.locator("#connection")).to_have_text("Live")
        assert await page.evaluate("sessionStorage.getItem('patchbay.token')") == TOKEN
        # live updates work behind the token too
        async with locked.http() as http:
            assert (await http.post("/api/servers/mb/restart")).status_code == 200
        await expect(card(page, "mb").locator(".fact", has_text="Restarts")).to_contain_text("1")
        # the token is kept for the tab: a reload does not ask again
        await page.reload()
        await expect_state(page, "mb", "ready")
        await expect(dialog).to_be_hidden()
        # and forgetting it asks again
        await page.get_by_role("button", name="Forget token").click()
        await expect(dialog).to_be_visible()
    finally:
        await page.context.close()
    assert tab.errors == []


# --- small screens, and the picture in the docs ----------------------------------------------------------


async def test_phone_width_has_no_horizontal_overflow(browser: Browser, hub: Served) -> None:
    tab = await open_tab(browser, f"{hub.base}/", PHONE)
    page = tab.page
    try:
        await expect_state(page, "mb", "ready")
        row = await open_tool(page, "demo__convert_time")
        await row.get_by_role("textbox", name=re.compile(r"^time \(required\)")).fill("09:00")
        await row.get_by_role("textbox", name=re.compile(r"^from_timezone")).fill("Europe/Berlin")
        await row.get_by_role("textbox", name=re.compile(r"^to_timezone")).fill("Asia/Tokyo")
        await row.get_by_role("button", name="Call tool").click()
        await expect(row.locator(".result .structured")).to_contain_text("Asia/Tokyo")
        overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert await page.evaluate(overflow) == 0
        await page.get_by_role("button", name="Add server").click()
        await expect(page.get_by_role("dialog", name="Add a server")).to_be_visible()
        assert await page.evaluate(overflow) == 0
        box = await page.get_by_role("dialog", name="Add a server").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    finally:
        await page.context.close()
    assert tab.errors == []


async def test_event_stream_parser_handles_split_chunks(page: Page) -> None:
    events = await page.evaluate(
        """async () => {
            const { createParser } = await import("./dashboard/js/sse.js");
            const seen = [];
            const parser = createParser((ev) => seen.push(ev));
            const text = ": ping\\r\\nevent: catalog\\r\\ndata: {\\"a\\":\\r\\ndata: 1}\\r\\n\\r\\n"
                + "data: plain\\n\\nevent: x\\rdata: y\\r\\r\\n";
            for (const chunk of text.split(/(?<=\\r)|(?=\\n)/)) parser.feed(chunk);  // CR and LF apart
            return seen;
        }"""
    )
    assert events == [
        {"type": "catalog", "data": '{"a":\n1}', "id": ""},
        {"type": "message", "data": "plain", "id": ""},
        {"type": "x", "data": "y", "id": ""},
    ]


PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


async def test_results_render_images_links_and_resources_safely(page: Page) -> None:
    """Every content block type of a CallToolResult, rendered by the page's own module."""
    rendered = await page.evaluate(
        """async (png) => {
            const { renderResult } = await import("./dashboard/js/result.js");
            const box = document.createElement("div");
            document.body.append(box);
            renderResult(box, { ok: true, status: 200, body: { isError: false, content: [
                { type: "text", text: "<b>bold?</b>" },
                { type: "image", mimeType: "image/png", data: png },
                { type: "image", mimeType: 'image/png" onerror="x', data: png },
                { type: "resource_link", uri: "https://example.com/doc", name: "the doc" },
                { type: "resource_link", uri: "javascript:alert(1)", name: "evil" },
                { type: "resource", resource: { uri: "test://hello", text: "hello" } },
            ] } }, 12);
            const img = box.querySelectorAll("img");
            return {
                text: box.querySelector("pre.out-text").textContent,
                bold: box.querySelectorAll("b").length,
                images: [...img].map((i) => i.getAttribute("src").slice(0, 22)),
                loaded: img.length && (await img[0].decode().then(() => img[0].naturalWidth)),
                links: [...box.querySelectorAll("a")].map((a) => a.href),
                resource: box.querySelector(".out-resource").textContent,
                unshown: box.querySelectorAll(".out-image").length,
                all: box.textContent,
            };
        }""",
        PNG_1PX,
    )
    assert rendered["text"] == "<b>bold?</b>" and rendered["bold"] == 0
    assert rendered["images"] == ["data:image/png;base64,"] and rendered["loaded"] == 1
    assert rendered["links"] == ["https://example.com/doc"]  # a javascript: link is shown as text only
    assert "javascript:alert(1)" in rendered["all"] and "cannot be shown" in rendered["all"]
    assert "test://hello" in rendered["resource"] and "hello" in rendered["resource"]


async def test_screenshot(browser: Browser, hubs: Hubs, tmp_path: Path) -> None:
    """The dashboard with the demo server and one tool tried; saved to $PATCHBAY_SCREENSHOT if set."""
    tab = await open_tab(browser, f"{(await hubs.get('demo')).base}/")
    page = tab.page
    try:
        await expect_state(page, "demo", "ready")
        row = await open_tool(page, "demo__now")
        await row.get_by_role("textbox", name=re.compile(r"^timezone")).fill("Europe/Berlin")
        await row.get_by_role("button", name="Call tool").click()
        await expect(row.locator(".result .structured")).to_contain_text('"timezone": "Europe/Berlin"')
        await page.mouse.move(0, 0)
        await page.evaluate("window.scrollTo(0, 0)")
        target = Path(os.environ.get("PATCHBAY_SCREENSHOT") or tmp_path / "dashboard.png")
        await page.screenshot(path=target)
        assert target.stat().st_size > 10_000
    finally:
        await page.context.close()
    assert tab.errors == []
