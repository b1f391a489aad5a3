"""The dashboard's Activity view in a real headless Chromium against a real ``patchbay serve``: calls made
through the API appear live (in flight, then in the recent calls with their outcome), errors stand out,
the per-server charts are drawn, and a page opened later is seeded from the audit log."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import bad
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, DEMO, Tab, async_playwright, open_tab
from tests.test_serve import Served, start_serve, stop_serve

if async_playwright is not None:
    from playwright.async_api import Browser, Locator, Page, expect

pytestmark = [
    pytest.mark.skipif(async_playwright is None, reason="playwright is not installed: run `make test`"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed: run `make test`"),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def hub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    config = tmp_path_factory.mktemp("activity") / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"demo": DEMO, "mb": bad()}}, indent=2))
    served = await start_serve(config, env={"PATCHBAY_TOKEN": ""})
    yield served
    await stop_serve(served)
    stderr = (await served.proc.stderr.read()).decode()  # type: ignore[union-attr]
    assert "Traceback" not in stderr, stderr


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser(hub: Served) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def live_tab(browser: Browser, hub: Served) -> Tab:
    tab = await open_tab(browser, f"{hub.base}/")
    await expect(tab.page.locator("#connection")).to_have_text("Live", timeout=20_000)
    return tab


def row(page: Page, tool: str, outcome: str) -> Locator:
    return page.locator(f"#activity tr.call-row[data-tool='{tool}'][data-outcome='{outcome}']")


async def test_calls_appear_live_with_their_outcome_and_errors_stand_out(
    browser: Browser, hub: Served
) -> None:
    tab = await live_tab(browser, hub)
    page = tab.page
    try:
        async with hub.http() as http:
            slow = asyncio.ensure_future(
                http.post("/api/tools/mb__sleep/call", json={"arguments": {"seconds": 15}}, timeout=60)
            )
            try:
                flight = page.locator("#activity .activity-inflight li[data-tool='mb__sleep']")
                await expect(flight).to_be_visible(timeout=10_000)
                await expect(page.locator("#activity-inflight-count")).to_have_text("1")
                assert (
                    await http.post("/api/tools/mb__echo/call", json={"arguments": {"text": "x"}})
                ).status_code == 200
                assert (await http.post("/api/tools/mb__fail/call", json={})).status_code == 200
                assert (
                    await http.post("/api/tools/demo__add/call", json={"arguments": {"a": 1, "b": 2}})
                ).status_code == 200
                ok = row(page, "mb__echo", "ok")
                await expect(ok).to_be_visible(timeout=10_000)
                await expect(ok).to_contain_text("local")
                await expect(ok).not_to_have_class("call-row call-error")
                failed = row(page, "mb__fail", "tool_error")
                await expect(failed).to_be_visible(timeout=10_000)
                await expect(failed).to_have_class("call-row call-error")
                await expect(failed.locator(".badge")).to_have_text("tool_error")
                background = await failed.locator("td").first.evaluate(
                    "td => getComputedStyle(td).backgroundColor"
                )
                normal = await ok.locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
                assert background != normal  # the error row is tinted
                await expect(page.locator("#activity .activity-errors")).to_contain_text("1 error")
                assert (await slow).status_code == 200
            finally:
                if not slow.done():
                    slow.cancel()
                await asyncio.gather(slow, return_exceptions=True)
        await expect(row(page, "mb__sleep", "ok")).to_be_visible(timeout=10_000)
        await expect(page.locator("#activity-inflight-count")).to_have_text("0")

        mb = page.locator("#activity figure.activity-server[data-server='mb']")
        await expect(mb).to_have_class("activity-server has-errors")
        await expect(mb.locator(".error-rate")).to_have_text("33% errors")  # 1 of echo, fail, sleep
        chart = mb.locator("svg.activity-chart")
        await expect(chart).to_have_attribute(
            "aria-label", re.compile(r"^mb: 3 calls in 15 min, max p95 .+ s, 1 errors$")
        )
        assert await chart.locator(".p50").count() == 1 and await chart.locator(".p95").count() == 1
        assert await chart.locator("rect.bar-error").count() == 1
        demo = page.locator("#activity figure.activity-server[data-server='demo']")
        await expect(demo).to_have_class("activity-server")
        await expect(demo.locator(".error-rate")).to_have_text("0% errors")
        assert await demo.locator("rect.bar-error").count() == 0
        box = await chart.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 40  # drawn, not collapsed
    finally:
        await page.context.close()
    assert tab.errors == []


async def test_a_page_opened_later_is_seeded_from_the_audit_log(browser: Browser, hub: Served) -> None:
    async with hub.http() as http:
        assert (
            await http.post("/api/tools/mb__add/call", json={"arguments": {"a": 2, "b": 2}})
        ).status_code == 200
        r = await http.get("/api/audit", params={"tool": "mb__add"})  # written, so the page can read it
        assert r.json()
    tab = await live_tab(browser, hub)
    try:
        await expect(row(tab.page, "mb__add", "ok")).to_be_visible(timeout=10_000)
        await expect(tab.page.locator("#activity figure.activity-server[data-server='mb']")).to_be_visible()
    finally:
        await tab.page.context.close()
    assert tab.errors == []
