"""Remote upstreams through a real HTTP proxy (tinyproxy on 127.0.0.1): the environment's and a server's own.

tinyproxy logs every request it forwards (``Request (file descriptor N): POST http://...``), which is how
each test proves where the traffic went.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchbay import ConfigError, Hub
from patchbay.config import parse_server_spec
from tests.conftest import HubFactory, wait_for
from tests.test_http_upstream import ServerProcess, free_port, text, wait_listening

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class TinyProxy:
    """tinyproxy in the foreground on a free port, its log in a file."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / "tinyproxy.log"
        conf = workdir / "tinyproxy.conf"
        conf.write_text(f"Port {self.port}\nListen 127.0.0.1\nTimeout 600\nLogLevel Info\nMaxClients 200\n")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["tinyproxy", "-d", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_listening(self.port, self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, target: str, prefix: bool = False) -> list[str]:
        """The methods of the requests it forwarded to ``target`` (a URL, or a URL prefix)."""
        pattern = re.compile(r"Request \(file descriptor \d+\): (\w+) (\S+)")
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = pattern.search(line)
            if m and (m.group(2).startswith(target) if prefix else m.group(2) == target):
                found.append(m.group(1))
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[TinyProxy]:
    if shutil.which("tinyproxy") is None:
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy; `make test` installs it)")
    proxy = TinyProxy(tmp_path)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[ServerProcess]:
    server = ServerProcess(free_port(), "--name", "proxied").start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def sse_server() -> Iterator[ServerProcess]:
    server = ServerProcess(free_port(), "--transport", "sse", "--name", "proxied-sse").start()
    yield server
    server.kill()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with no proxy variables, in either case."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)


def dead_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


# --- the environment's proxy -------------------------------------------------------------------------------


async def test_http_proxy_from_the_environment_carries_the_traffic(
    make_hub: HubFactory, tinyproxy: TinyProxy, mcp_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", tinyproxy.url)  # 127.0.0.1 is not exempt unless NO_PROXY says so
    hub = await make_hub({"remote": {"url": mcp_server.url}})
    assert hub.status()["remote"].state == "ready", hub.status()["remote"].last_error
    assert text(await hub.call_tool("remote__echo", {"text": "via proxy"})) == "via proxy"
    await wait_for(lambda: tinyproxy.requests(mcp_server.url).count("POST") >= 4, 5)  # init, list, call


async def test_legacy_sse_through_the_environment_proxy(
    make_hub: HubFactory, tinyproxy: TinyProxy, sse_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", tinyproxy.url)
    hub = await make_hub({"old": {"url": sse_server.url, "type": "sse"}})
    assert hub.status()["old"].state == "ready", hub.status()["old"].last_error
    assert text(await hub.call_tool("old__echo", {"text": "sse via proxy"})) == "sse via proxy"
    assert tinyproxy.requests(sse_server.url) == ["GET"]  # the event stream itself went through it
    base = sse_server.url.removesuffix("/sse")
    await wait_for(lambda: tinyproxy.requests(base + "/messages", prefix=True).count("POST") >= 4, 5)


async def test_no_proxy_bypasses_the_environment_proxy(
    make_hub: HubFactory, tinyproxy: TinyProxy, mcp_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", tinyproxy.url)
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    hub = await make_hub({"remote": {"url": mcp_server.url}})
    assert text(await hub.call_tool("remote__echo", {"text": "direct"})) == "direct"
    assert tinyproxy.requests(mcp_server.url) == []


async def test_unusable_proxy_variable_fails_the_server_clearly(
    make_hub: HubFactory, mcp_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "ftp://127.0.0.1:21")
    hub = await make_hub({"remote": {"url": mcp_server.url}})
    st = hub.status()["remote"]
    assert st.state == "failed"
    assert "server 'remote': environment variable HTTP_PROXY: 'ftp://127.0.0.1:21' is not a proxy URL" in (
        st.last_error or ""
    )


# --- the server's own proxy ------------------------------------------------------------------------------


async def test_server_proxy_field_wins_over_the_environment(
    make_hub: HubFactory, tinyproxy: TinyProxy, mcp_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_TEST_PROXY", tinyproxy.url)
    monkeypatch.setenv("HTTP_PROXY", dead_port_url())  # would fail if it were used
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # does not apply to an explicit proxy
    hub = await make_hub({"remote": {"url": mcp_server.url, "proxy": "${PB_TEST_PROXY}"}})
    assert hub.status()["remote"].state == "ready", hub.status()["remote"].last_error
    assert text(await hub.call_tool("remote__echo", {"text": "own proxy"})) == "own proxy"
    await wait_for(lambda: tinyproxy.requests(mcp_server.url).count("POST") >= 4, 5)


async def test_only_the_server_with_a_proxy_uses_it(
    make_hub: HubFactory, tinyproxy: TinyProxy, mcp_server: ServerProcess
) -> None:
    hub = await make_hub(
        {"direct": {"url": mcp_server.url}, "proxied": {"url": mcp_server.url, "proxy": tinyproxy.url}}
    )
    before = len(tinyproxy.requests(mcp_server.url))
    assert text(await hub.call_tool("direct__echo", {"text": "d"})) == "d"
    assert len(tinyproxy.requests(mcp_server.url)) == before
    assert text(await hub.call_tool("proxied__echo", {"text": "p"})) == "p"
    await wait_for(lambda: len(tinyproxy.requests(mcp_server.url)) > before, 5)


async def test_dead_proxy_is_named_in_the_error(make_hub: HubFactory, mcp_server: ServerProcess) -> None:
    proxy = dead_port_url()
    hub = await make_hub(
        {"remote": {"url": mcp_server.url, "proxy": proxy.replace("http://", "http://me:s3cret@")}},
    )
    st = hub.status()["remote"]
    assert st.state != "ready"
    error = st.last_error or ""
    assert mcp_server.url in error and "through proxy http://me:***@127.0.0.1" in error, error
    assert "s3cret" not in error


# --- validating the field ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"url": "http://x/mcp", "proxy": "ftp://p:21"}, "proxy: 'ftp://p:21' is not a proxy URL"),
        ({"url": "http://x/mcp", "proxy": "localhost:3128"}, "is not a proxy URL; write http://host:port"),
        ({"url": "http://x/mcp", "proxy": "http://u:pw@"}, "'http://u:***@' is not a proxy URL"),
        ({"command": "x", "proxy": "http://p:3128"}, "only remote servers (http, sse) go through a proxy"),
    ],
)
def test_bad_proxy_field_is_a_config_error_naming_server_and_field(
    entry: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_server_spec("srv", entry)
    assert info.value.server == "srv" and info.value.field == "proxy"
    assert "server 'srv': proxy: " in str(info.value) and message in str(info.value)


async def test_proxy_placeholder_is_checked_once_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PB_TEST_PROXY", "gopher://p:70")
    spec = parse_server_spec("srv", {"url": "http://127.0.0.1:9/mcp", "proxy": "${PB_TEST_PROXY}"})
    assert spec.to_json()["proxy"] == "${PB_TEST_PROXY}"  # kept as written, for the file
    hub = Hub.from_dict({"mcpServers": {"srv": spec.to_json()}})
    async with hub:
        st = hub.status()["srv"]
        assert st.state == "failed"
        assert "server 'srv': proxy: 'gopher://p:70' is not a proxy URL" in (st.last_error or "")
