"""The ``patchbay`` command line end to end: the real CLI as subprocesses, real config files in tmp dirs,
and a real ``patchbay serve`` for the commands that go through a hub's API.

Every CLI run is a fresh interpreter (about a second each), so independent runs go in parallel.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from patchbay.cli import main
from patchbay.cli.commands.tools import parse_call_arguments
from patchbay.cli.errors import CliError
from patchbay.cli.importers import strip_jsonc
from tests.conftest import bad
from tests.test_serve import free_port

TOKEN = "cli-test-token-0123456789"
SERVER_VIEW_KEYS = {
    "name",
    "state",
    "transport",
    "enabled",
    "pid",
    "tool_count",
    "restarts",
    "last_error",
    "spec",
}


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def clean_env(**extra: str | None) -> dict[str, str]:
    """The test's environment without the user's patchbay and colour settings; a dead default hub URL
    (nothing listens there), so commands fall back to the config file unless a test says otherwise."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("PATCHBAY_URL", "PATCHBAY_TOKEN", "NO_COLOR", "FORCE_COLOR", "XDG_CONFIG_HOME", "APPDATA")
    }
    env["PATCHBAY_URL"] = f"http://127.0.0.1:{DEAD_PORT}"
    env["XDG_CONFIG_HOME"] = str(USER_CONFIG_HOME)  # never the user's own per-user config
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


DEAD_PORT = free_port()
USER_CONFIG_HOME = Path(tempfile.mkdtemp(prefix="patchbay-test-xdg-"))


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "patchbay", *args],
        cwd=cwd,
        env=env or clean_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def cli_many(runs: Sequence[tuple[Sequence[str], dict[str, Any]]]) -> list[Result]:
    """Independent CLI runs, in parallel."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(cli, *args, **kwargs) for args, kwargs in runs]
        return [f.result() for f in futures]


InProcess = Callable[..., Result]


@pytest.fixture
def in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> InProcess:
    """``main(argv)`` in this process: the same CLI without an interpreter start, for the runs that only
    read and write files (each command also has subprocess runs)."""
    for var in ("NO_COLOR", "FORCE_COLOR", "XDG_CONFIG_HOME", "APPDATA", "PATCHBAY_URL", "PATCHBAY_TOKEN"):
        monkeypatch.delenv(var, raising=False)

    def run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
        monkeypatch.chdir(cwd)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def one_error_line(r: Result) -> str:
    """The run failed with one error line on stderr, ``patchbay: error: …``, last, and no traceback
    (progress lines such as "via hub at …" may come before it)."""
    errors = [line for line in r.err.splitlines() if line.startswith("patchbay: error: ")]
    assert len(errors) == 1 and r.err.splitlines()[-1] == errors[0], r
    assert "Traceback" not in r.err
    return errors[0]


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


# --- a real hub -----------------------------------------------------------------------------------------


@dataclass
class RunningHub:
    url: str
    config: Path
    proc: subprocess.Popen[bytes]

    def env(self, **extra: str | None) -> dict[str, str]:
        return clean_env(**{"PATCHBAY_URL": self.url, "PATCHBAY_TOKEN": TOKEN, **extra})

    def doc(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.config.read_text())
        return data


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """One ``patchbay serve`` (with a bearer token) for the module's API-mode tests."""
    folder = tmp_path_factory.mktemp("hub")
    config = write(
        folder / "patchbay.json",
        {"mcpServers": {"mb": bad(), "spare": bad("--name", "spare", enabled=False)}, "custom": {"keep": 1}},
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "patchbay",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--token",
            TOKEN,
        ],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    with httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5) as http:
        for _ in range(300):
            assert proc.poll() is None, "patchbay serve exited"
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("patchbay serve did not become ready")
    yield RunningHub(url, config, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)


def test_through_the_hub_list_tools_and_call(hub: RunningHub, tmp_path: Path) -> None:
    env = hub.env()
    runs: list[tuple[Sequence[str], dict[str, Any]]] = [
        (["servers", "list", "--json"], {"env": env}),
        (["servers", "list"], {"env": env}),
        (["tools", "--json"], {"env": env}),
        (["tools", "--server", "mb", "--format", "openai"], {"env": env}),
        (["call", "mb__add", "a=2", "b=3", "--json"], {"env": env}),
        (["call", "mb__echo", "--args", "-"], {"env": env, "stdin": '{"text": "from stdin"}'}),
        (["call", "mb__fail"], {"env": env}),
        (["call", "mb__ech", "text=x"], {"env": env}),
        (["servers", "list"], {"env": hub.env(PATCHBAY_TOKEN=None)}),
    ]
    (
        listed, table, tools, openai, added, stdin, failed, unknown, no_token,
    ) = cli_many([(args, {"cwd": tmp_path, **kw}) for args, kw in runs])  # fmt: skip

    assert listed.code == 0, listed
    assert f"via hub at {hub.url}" in listed.err
    views = {v["name"]: v for v in listed.json()}
    assert all(set(v) >= SERVER_VIEW_KEYS for v in views.values())
    assert views["mb"]["state"] == "ready" and views["mb"]["tool_count"] >= 5 and views["mb"]["pid"]
    assert views["spare"]["state"] == "disabled" and not views["spare"]["enabled"]
    assert views["mb"]["spec"]["args"] == bad()["args"]
    assert "SERVER" in table.out and "ready" in table.out and "\x1b[" not in table.out  # no colour in a pipe

    names = [t["name"] for t in tools.json()]
    assert "mb__echo" in names and "inputSchema" in tools.json()[0]
    assert openai.code == 0 and all(t["type"] == "function" for t in openai.json())  # JSON without --json
    assert {t["function"]["name"] for t in openai.json()} >= {"mb__echo", "mb__add"}

    assert added.code == 0 and added.json()["structuredContent"] == {"result": 5}
    assert stdin.code == 0 and stdin.out == "from stdin\n"
    assert failed.code == 1 and failed.out == "Error: tool failed on purpose\n"
    assert unknown.code == 2
    assert "unknown tool 'mb__ech'; did you mean 'mb__echo'" in one_error_line(unknown)
    assert no_token.code == 2 and "needs a bearer token" in one_error_line(no_token)


def test_through_the_hub_add_disable_enable_restart_remove(hub: RunningHub, tmp_path: Path) -> None:
    env = hub.env()
    spec = bad("--name", "extra")

    def step(*runs: Sequence[str]) -> list[Result]:
        return cli_many([(args, {"cwd": tmp_path, "env": env}) for args in runs])

    good, broken, restarted = step(
        ["servers", "add", "extra", "--timeout", "20", "--", spec["command"], *spec["args"]],
        ["servers", "add", "broken", "--", str(tmp_path / "no-such-command")],
        ["servers", "restart", "mb", "--json"],
    )
    assert good.code == 0, good
    assert "added extra: ready" in good.out and f"via hub at {hub.url}" in good.err
    assert hub.doc()["mcpServers"]["extra"] == {**spec, "timeout": 20}
    assert hub.doc()["custom"] == {"keep": 1}  # the hub's save keeps unknown keys
    assert broken.code == 1
    assert "server 'broken' did not start (failed): command:" in one_error_line(broken)
    assert restarted.code == 0 and set(restarted.json()) >= SERVER_VIEW_KEYS
    assert restarted.json()["state"] == "ready" and restarted.json()["spec"]["args"] == bad()["args"]

    disabled, removed_broken = step(
        ["servers", "disable", "extra", "--json"], ["servers", "remove", "broken"]
    )
    assert disabled.code == 0 and disabled.json()["state"] == "disabled"
    assert hub.doc()["mcpServers"]["extra"]["enabled"] is False
    assert removed_broken.code == 0 and "removed broken" in removed_broken.out
    [enabled] = step(["servers", "enable", "extra"])
    assert enabled.code == 0 and "enabled extra: ready" in enabled.out
    [removed] = step(["servers", "remove", "extra", "--json"])
    assert removed.code == 0 and removed.json() == {"name": "extra", "removed": True}
    assert set(hub.doc()["mcpServers"]) == {"mb", "spare"}


# --- without a hub: the config file ---------------------------------------------------------------------


def test_without_a_hub_servers_commands_edit_the_file(tmp_path: Path) -> None:
    write(
        tmp_path / "patchbay.json",
        {
            "mcpServers": {"mb": bad(env={"SECRET": "hunter2"}), "old": {"command": "x", "disabled": True}},
            "custom": {"keep": [1, 2]},
        },
    )
    listed, table, restart, explicit, duplicate, unknown, created = cli_many(
        [
            (["servers", "list", "--json"], {"cwd": tmp_path}),
            (["servers", "list"], {"cwd": tmp_path}),
            (["servers", "restart", "mb"], {"cwd": tmp_path}),
            (["servers", "list", "--url", f"http://127.0.0.1:{DEAD_PORT}"], {"cwd": tmp_path}),
            (["servers", "add", "mb", "--", "x"], {"cwd": tmp_path}),
            (["servers", "remove", "nope"], {"cwd": tmp_path}),
            # a new file is created where --config says, folder and all
            (["servers", "add", "web", "https://example.com/mcp", "-H", "Authorization: Bearer ${T}",
              "--config", "sub/new.json", "--json"], {"cwd": tmp_path}),
        ]
    )  # fmt: skip
    assert listed.code == 0, listed
    assert "hub not reachable; using patchbay.json directly" in listed.err
    views = listed.json()
    assert [v["name"] for v in views] == ["mb", "old"]
    assert all(set(v) >= SERVER_VIEW_KEYS and v["state"] is None for v in views)
    assert views[0]["spec"]["env"] == {"SECRET": "***"} and not views[1]["enabled"]
    assert "disabled" in table.out and "misbehaving_server.py" in table.out
    assert restart.code == 3 and "needs a running hub" in one_error_line(restart)
    assert explicit.code == 3
    assert f"hub not reachable at http://127.0.0.1:{DEAD_PORT}" in one_error_line(explicit)
    assert duplicate.code == 2 and "'mb' already exists" in one_error_line(duplicate)
    assert unknown.code == 2 and "unknown server 'nope'; known: mb, old" in one_error_line(unknown)
    assert created.code == 0, created
    assert created.json()["transport"] == "http" and created.json()["spec"]["headers"] == {
        "Authorization": "***"
    }
    assert json.loads((tmp_path / "sub" / "new.json").read_text()) == {
        "mcpServers": {"web": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ${T}"}}}
    }

    # two files edited in parallel: add then remove in one, disable then enable in the other
    write(tmp_path / "b.json", {"mcpServers": {"mb": bad(), "old": {"command": "x", "disabled": True}}})

    def add_then_remove() -> tuple[Result, Result]:
        added = cli(
            "servers", "add", "files", "--env", "ROOT=${HOME}", "--prefix", "fs", "--",
            "npx", "-y", "@modelcontextprotocol/server-filesystem", "--flag", cwd=tmp_path,
        )  # fmt: skip
        assert json.loads((tmp_path / "patchbay.json").read_text())["mcpServers"]["files"] == {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "--flag"],
            "env": {"ROOT": "${HOME}"},
            "prefix": "fs",
        }
        return added, cli("servers", "remove", "files", cwd=tmp_path)

    def disable_then_enable() -> tuple[Result, Result]:
        disabled = cli("servers", "disable", "mb", "--config", "b.json", cwd=tmp_path)
        return disabled, cli("servers", "enable", "old", "--json", "--config", "b.json", cwd=tmp_path)

    with ThreadPoolExecutor(2) as pool:
        chain_a, chain_b = pool.submit(add_then_remove), pool.submit(disable_then_enable)
        (added, removed), (disabled, enabled) = chain_a.result(), chain_b.result()
    assert added.code == 0 and "added files to patchbay.json" in added.out, added
    assert removed.code == 0 and "removed files from patchbay.json" in removed.out
    assert disabled.code == 0 and "disabled mb in b.json" in disabled.out
    assert enabled.code == 0 and enabled.json()["enabled"] is True
    b_doc = json.loads((tmp_path / "b.json").read_text())
    assert b_doc["mcpServers"]["mb"]["enabled"] is False
    assert b_doc["mcpServers"]["old"] == {"command": "x", "disabled": False}  # the file's own style is kept

    doc = json.loads((tmp_path / "patchbay.json").read_text())
    assert doc["custom"] == {"keep": [1, 2]}
    assert doc["mcpServers"] == {
        "mb": bad(env={"SECRET": "hunter2"}),
        "old": {"command": "x", "disabled": True},
    }
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic saves leave no temp files


def test_without_a_hub_tools_and_call_start_the_servers_here(tmp_path: Path) -> None:
    write(
        tmp_path / "patchbay.json",
        {"mcpServers": {"mb": bad(), "broken": {"command": str(tmp_path / "missing"), "maxRestarts": 0}}},
    )
    tools, anthropic, echoed, failed, once = cli_many(
        [
            (["tools"], {"cwd": tmp_path}),
            (["tools", "--format", "anthropic", "--server", "mb", "--json"], {"cwd": tmp_path}),
            (["call", "mb__echo", "text=hi", "--json"], {"cwd": tmp_path}),
            (["call", "mb__fail"], {"cwd": tmp_path}),
            (["run", "--once", "--json", "--config", "patchbay.json"], {"cwd": tmp_path}),
        ]
    )
    assert tools.code == 0, tools
    assert "hub not reachable; using patchbay.json directly" in tools.err
    assert "mb: ready" in tools.err and "broken: failed" in tools.err  # progress as servers settle
    assert "TOOL" in tools.out and "mb__echo" in tools.out and "Echo the text back." in tools.out
    assert anthropic.code == 0
    assert {"mb__echo", "mb__add"} <= {t["name"] for t in anthropic.json()}
    assert all(set(t) == {"name", "description", "input_schema"} for t in anthropic.json())
    assert echoed.code == 0 and echoed.json()["content"] == [{"type": "text", "text": "hi"}]
    assert failed.code == 1 and failed.out == "Error: tool failed on purpose\n"
    assert once.code == 1  # a server failed
    status = {s["name"]: s["state"] for s in once.json()["servers"]}
    assert status == {"mb": "ready", "broken": "failed"} and once.json()["tools"]


def test_key_value_arguments_are_json_when_they_parse() -> None:
    parsed = parse_call_arguments(
        None,
        ["n=5", "x=2.5", "on=true", "none=null", "tags=[\"a\", 1]", "obj={\"k\": 1}", "text=hello world",
         "quoted=\"5\"", "empty=", "eq=a=b", "nan=NaN", "brace={not json"],
    )  # fmt: skip
    assert parsed == {
        "n": 5, "x": 2.5, "on": True, "none": None, "tags": ["a", 1], "obj": {"k": 1}, "text": "hello world",
        "quoted": "5", "empty": "", "eq": "a=b", "nan": "NaN", "brace": "{not json",
    }  # fmt: skip
    assert parse_call_arguments('{"a": [1]}', []) == {"a": [1]}
    for args_json, pairs, message in (
        ("{}", ["a=1"], "not both"),
        (None, ["a=1", "a=2"], "given twice"),
        (None, ["=1"], "expected key=value"),
        ("1", [], "must be a JSON object"),
    ):
        with pytest.raises(CliError, match=message) as info:
            parse_call_arguments(args_json, pairs)
        assert info.value.code == 2


def _interrupt(
    tmp_path: Path, server: dict[str, Any], wait_for_line: str | None, twice: bool = False
) -> None:
    """Run ``patchbay call mb__sleep seconds=60`` on a config with ``server``; once its server process
    exists (and ``wait_for_line`` is on stderr), Ctrl-C it: it exits 130 within the ceiling and leaves no
    process behind. The ceiling is generous (a busy machine); the code's own bound is 2 s."""
    import psutil

    write(tmp_path / "patchbay.json", {"mcpServers": {"mb": server}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchbay", "call", "mb__sleep", "seconds=60"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        seen = ""
        while wait_for_line is not None and wait_for_line not in seen:
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        me = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        while not (children := me.children(recursive=True)):  # the server process has been spawned
            assert proc.poll() is None and time.monotonic() < deadline, seen
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        if twice:
            proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, seen + err)
    assert took < 10, took  # a ceiling only; the code's bound is 2 s
    assert "Traceback" not in err, err
    gone = psutil.wait_procs(children, timeout=5)[1]
    assert not gone, f"left behind: {gone}"


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    """During a call."""
    _interrupt(tmp_path, bad(), "calling mb__sleep")


def test_ctrl_c_during_start_exits_130(tmp_path: Path) -> None:
    _interrupt(tmp_path, bad("--slow-start", "60", startTimeout=120), "starting 1 server")


def test_ctrl_c_while_stopping_a_stubborn_server_exits_130(tmp_path: Path) -> None:
    """The server ignores stdin EOF and SIGTERM: a polite stop would take seconds; it is killed."""
    _interrupt(tmp_path, bad("--ignore-eof", "--ignore-sigterm"), "calling mb__sleep")
    _interrupt(tmp_path, bad("--ignore-eof", "--ignore-sigterm"), "calling mb__sleep", twice=True)


# --- config check ---------------------------------------------------------------------------------------


def test_config_check(tmp_path: Path, in_process: InProcess) -> None:
    write(
        tmp_path / "patchbay.json",
        {
            "mcpServers": {
                "mb": bad(),
                "needs": {"command": "${PATCHBAY_PYTHON}", "env": {"T": "${CLI_TEST_UNSET_VAR}"}},
                "ghost": {"command": "patchbay-no-such-command-xyz"},
                "remote": {"url": "https://example.com/mcp", "headers": {"A": "${CLI_TEST_OTHER:-x}"}},
            }
        },
    )
    write(tmp_path / "syntax.json", '{\n  "mcpServers": {\n    "a": {"command": }\n  }\n}\n')
    write(
        tmp_path / "fields.json",
        {"mcpServers": {"a": {"args": "x", "timeout": -1}, "b c": {"command": "x"}, "ok": {"command": "x"}}},
    )
    good, fields_json = cli_many(
        [
            (["config", "check"], {"cwd": tmp_path}),  # ./patchbay.json
            (["config", "check", "fields.json", "--json"], {"cwd": tmp_path}),
        ]
    )
    good_json = in_process("config", "check", "patchbay.json", "--json", cwd=tmp_path)
    syntax = in_process("config", "check", "syntax.json", cwd=tmp_path)
    fields = in_process("config", "check", "fields.json", cwd=tmp_path)
    assert good.code == 0, good
    assert "patchbay.json: 4 servers" in good.out and "patchbay.json: valid (2 warnings)" in good.out
    report = good_json.json()
    assert set(report) == {"path", "valid", "servers", "errors", "warnings"}
    assert report["valid"] is True and report["errors"] == []
    assert report["servers"] == ["mb", "needs", "ghost", "remote"]
    assert {(w["server"], w["field"]) for w in report["warnings"]} == {
        ("needs", "env.T"),
        ("ghost", "command"),
    }
    assert any("'CLI_TEST_UNSET_VAR' is not set" in w["message"] for w in report["warnings"])
    assert any("was not found on PATH" in w["message"] for w in report["warnings"])

    assert syntax.code == 1 and "syntax.json:3:22: not valid JSON" in syntax.out
    assert "syntax.json is invalid (1 error)" in one_error_line(syntax)

    assert fields.code == 1 and fields_json.code == 1
    problems = {(e["server"], e["field"]) for e in fields_json.json()["errors"]}
    assert problems == {("a", "args"), ("a", "timeout"), ("b c", None)}
    assert "server 'a': timeout: Input should be greater than 0" in fields.out


def test_config_check_validates_the_oauth_object(tmp_path: Path, in_process: InProcess) -> None:
    url = "https://example.com/mcp"
    write(
        tmp_path / "oauth.json",
        {
            "mcpServers": {
                "ok": {"url": url, "oauth": {"clientId": "c", "clientSecret": "${CLI_TEST_UNSET_SECRET}"}},
                "typo": {"url": url, "oauth": {"clientID": "c"}},
                "grant": {"url": url, "oauth": {"grant": "password"}},
                "public": {"url": url, "oauth": {"grant": "client_credentials", "clientId": "c"}},
                "shape": {"url": url, "oauth": "yes"},
                "local": {"command": "${PATCHBAY_PYTHON}", "oauth": {}},
            }
        },
    )
    result = in_process("config", "check", "oauth.json", "--json", cwd=tmp_path)
    assert result.code == 1, result
    report = result.json()
    assert {(e["server"], e["field"]) for e in report["errors"]} == {
        ("typo", "oauth.clientID"),
        ("grant", "oauth.grant"),
        ("public", "oauth.grant"),
        ("shape", "oauth"),
        ("local", "oauth"),
    }
    assert any("client_credentials needs a confidential client" in e["message"] for e in report["errors"])
    assert [(w["server"], w["field"]) for w in report["warnings"]] == [("ok", "oauth.clientSecret")]
    assert "'CLI_TEST_UNSET_SECRET' is not set" in report["warnings"][0]["message"]


# --- import ---------------------------------------------------------------------------------------------


def claude_path(home: Path) -> Path:
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    if os.name == "nt":
        return home / "AppData" / "Roaming" / "Claude" / "claude_desktop_config.json"
    return home / ".config" / "Claude" / "claude_desktop_config.json"


def test_import_claude_from_its_usual_place(tmp_path: Path, in_process: InProcess) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    project.mkdir()
    env = clean_env(
        HOME=str(home), USERPROFILE=str(home), APPDATA=str(home / "AppData" / "Roaming"), XDG_CONFIG_HOME=None
    )
    write(
        claude_path(home),
        {
            "mcpServers": {
                "filesystem": {"command": "npx",
                               "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]},
                "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"],
                           "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_x"}},
                "bad name": {"command": "x"},
                "broken": {"args": ["no command"]},
            },
            "globalShortcut": "Ctrl+Space",
        },
    )  # fmt: skip
    first = cli("import", "claude", cwd=project, env=env)
    assert first.code == 1, first  # two entries could not be imported
    assert f"from {claude_path(home)} into patchbay.json" in first.err
    assert "wrote patchbay.json (new file): 2 added, 0 replaced, 2 skipped" in first.out
    assert "invalid server name 'bad name'" in first.out and "a stdio server needs 'command'" in first.out
    target = project / "patchbay.json"
    doc = json.loads(target.read_text())
    assert list(doc) == ["mcpServers"] and list(doc["mcpServers"]) == ["filesystem", "github"]
    assert doc["mcpServers"]["github"]["env"] == {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_x"}

    # the target's own keys survive; present names are skipped unless --overwrite
    doc["auth"] = {"tokens": ["${PATCHBAY_TOKEN}"]}
    doc["mcpServers"]["github"]["args"] = ["changed"]
    write(target, doc)
    env = {"HOME": str(home), "USERPROFILE": str(home), "APPDATA": str(home / "AppData" / "Roaming")}
    again = in_process("import", "claude", "--json", cwd=project, env=env)
    report = again.json()
    assert set(report) == {
        "source",
        "target",
        "created",
        "dry_run",
        "added",
        "replaced",
        "skipped",
        "warnings",
    }
    assert report["added"] == [] and report["replaced"] == []
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    assert skipped["filesystem"] == "already present, identical"
    assert "use --overwrite" in skipped["github"]
    assert json.loads(target.read_text())["mcpServers"]["github"]["args"] == ["changed"]
    replaced = in_process("import", "claude", "--overwrite", "--json", cwd=project, env=env)
    assert replaced.json()["replaced"] == ["github"]
    doc = json.loads(target.read_text())
    assert doc["auth"] == {"tokens": ["${PATCHBAY_TOKEN}"]}
    assert doc["mcpServers"]["github"]["args"] == ["-y", "@modelcontextprotocol/server-github"]


def test_import_vscode_workspace_with_comments_and_inputs(tmp_path: Path, in_process: InProcess) -> None:
    project = tmp_path / "project"
    write(
        project / ".vscode" / "mcp.json",
        """{
  // servers for this workspace
  "inputs": [
    {"type": "promptString", "id": "gh-token", "description": "GitHub PAT", "password": true},
  ],
  "servers": {
    "github": {
      "type": "http",
      "url": "https://api.githubcopilot.com/mcp/",
      "headers": {"Authorization": "Bearer ${input:gh-token}"}, /* asked for at start */
    },
    "local": {"type": "stdio", "command": "python3", "args": ["${workspaceFolder}/server.py", "a // b"]},
  },
}
""",
    )
    env = {"HOME": str(tmp_path / "home")}
    r = in_process("import", "vscode", "--json", cwd=project, env=env)
    assert r.code == 0, r
    report = r.json()
    assert report["added"] == ["github", "local"] and report["created"] is True
    [warning] = report["warnings"]
    assert warning["server"] == "github" and warning["field"] == "headers.Authorization"
    assert "${input:gh-token} (GitHub PAT)" in warning["message"] and "cannot ask" in warning["message"]
    doc = json.loads((project / "patchbay.json").read_text())
    assert doc["mcpServers"]["github"] == {
        "type": "http",
        "url": "https://api.githubcopilot.com/mcp/",
        "headers": {"Authorization": "Bearer ${input:gh-token}"},
    }
    assert doc["mcpServers"]["local"]["args"] == [f"{project.resolve()}/server.py", "a // b"]
    check = in_process("config", "check", cwd=project, env=env)
    assert check.code == 0 and "VS Code input prompt" in check.out  # config check warns about it as well


def test_import_cursor_into_an_existing_file(tmp_path: Path, in_process: InProcess) -> None:
    home = tmp_path / "home"
    write(
        home / ".cursor" / "mcp.json",
        {
            "mcpServers": {
                "legacy": {"url": "http://localhost:3000/sse"},
                "weird": {"command": "x", "env": {"A": True}},
            }
        },
    )
    write(tmp_path / "mine.json", {"servers": {"kept": {"command": "y"}}, "other": "value"})
    write(tmp_path / "elsewhere.json", {"mcpServers": {"given": {"command": "z"}}})
    real = cli(
        "import", "cursor", "--config", "real.json", "--json", cwd=tmp_path, env=clean_env(HOME=str(home))
    )
    env = {"HOME": str(home), "USERPROFILE": str(home)}
    dry = in_process("import", "cursor", "--config", "mine.json", "--dry-run", cwd=tmp_path, env=env)
    explicit = in_process(
        "import", "cursor", "elsewhere.json", "--config", "mine.json", cwd=tmp_path, env=env
    )
    assert dry.code == 1 and "dry run: 1 added, 0 replaced, 1 skipped; mine.json not written" in dry.out
    assert real.code == 1
    report = real.json()
    assert report["added"] == ["legacy"]
    assert report["skipped"] == [
        {"name": "weird", "reason": "server 'weird': env.A: Input should be a valid string"}
    ]
    assert json.loads((tmp_path / "real.json").read_text())["mcpServers"]["legacy"] == {
        "type": "sse",
        "url": "http://localhost:3000/sse",
    }
    assert explicit.code == 0, explicit
    assert json.loads((tmp_path / "mine.json").read_text()) == {
        "servers": {"kept": {"command": "y"}, "given": {"command": "z"}},  # the file's key is kept
        "other": "value",
    }


def test_jsonc_is_read_with_positions_kept() -> None:
    text = '{\n  // c\n  "a": "x // y", /* z */\n  "b": [1, 2,],\n}'
    assert json.loads(strip_jsonc(text)) == {"a": "x // y", "b": [1, 2]}
    assert len(strip_jsonc(text)) == len(text)


# --- help, usage errors, colour -------------------------------------------------------------------------

COMMANDS = [
    [], ["run"], ["serve"], ["agent"], ["servers"], ["servers", "list"], ["servers", "add"],
    ["servers", "remove"], ["servers", "enable"], ["servers", "disable"], ["servers", "restart"],
    ["tools"], ["call"], ["config"], ["config", "check"], ["import"],
]  # fmt: skip


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for cmd in COMMANDS:  # in-process: the same parser, without an interpreter start per command
        with pytest.raises(SystemExit) as exited:
            main([*cmd, "--help"])
        assert exited.value.code == 0, cmd
        assert "example" in capsys.readouterr().out.lower(), cmd
    real = cli("servers", "add", "--help", cwd=tmp_path)  # and once through the real entry point
    assert real.code == 0 and "examples:" in real.out and "-- npx -y" in real.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["servers"], "the following arguments are required: ACTION (see 'patchbay servers --help')"),
        (["tools", "--format", "xml"], "invalid choice: 'xml'"),
        (["servers", "add", "x", "npx", "-y", "pkg"], "put the server's command after '--'"),
        (["call", "t", "--bogus"], "unrecognized arguments: --bogus (see 'patchbay call --help')"),
        (["servers", "list", "--no-hub", "--url", "http://127.0.0.1:1"], "either --url or --no-hub"),
        (["servers", "list", "--url", "ftp://x"], "--url must be an http:// or https:// address"),
        (["servers", "add", "x", "--env", "NOVALUE", "--", "cmd"], "--env expects KEY=VALUE"),
        (["servers", "add", "x"], "give the server's command after '--'"),
        (
            ["servers", "add", "x", "--spec", '{"command": "c", "timeout": 0}'],
            "timeout: Input should be greater",
        ),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("patchbay: error: ") and message in err, err


def test_config_errors_and_debug_tracebacks(tmp_path: Path) -> None:
    write(tmp_path / "patchbay.json", {"mcpServers": {"a": {"command": "x", "timeout": 0}}})
    invalid, debug = cli_many(
        [
            (["tools"], {"cwd": tmp_path}),
            (["servers", "list", "--no-hub", "--config", "missing.json", "--debug"], {"cwd": tmp_path}),
        ]
    )
    assert invalid.code == 2
    assert "patchbay.json: invalid configuration: server 'a': timeout: Input should be greater than 0" in (
        one_error_line(invalid)
    )
    assert debug.code != 0 and "Traceback" in debug.err and "config file not found" in debug.err


def test_colour_only_when_wanted_and_more_failures_in_process(
    tmp_path: Path, in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "patchbay.json", {"mcpServers": {"ghost": {"command": "patchbay-no-such-command-xyz"}}})
    write(tmp_path / "other.json", {"editor.fontSize": 14})
    plain = in_process("config", "check", cwd=tmp_path)  # captured output is not a terminal: no colour
    assert plain.code == 0 and "warning" in plain.out and "\x1b[" not in plain.out
    forced = in_process("config", "check", cwd=tmp_path, env={"FORCE_COLOR": "1"})
    assert forced.code == 0 and "\x1b[33mwarning\x1b[0m" in forced.out
    no_colour = in_process("config", "check", cwd=tmp_path, env={"NO_COLOR": "1"})
    assert no_colour.code == 0 and "\x1b[" not in no_colour.out

    missing = in_process("config", "check", "missing.json", cwd=tmp_path)
    assert missing.code == 1 and "missing.json: config file not found" in missing.out
    assert "missing.json is invalid" in one_error_line(missing)
    nowhere = in_process("import", "claude", cwd=tmp_path, env={"HOME": str(tmp_path / "nobody")})
    assert nowhere.code == 2 and "no Claude Desktop config found (looked for" in one_error_line(nowhere)
    not_a_client = in_process("import", "cursor", "other.json", cwd=tmp_path)
    assert not_a_client.code == 2 and "no 'mcpServers' or 'servers' in this file" in one_error_line(
        not_a_client
    )


# --- which config file ----------------------------------------------------------------------------------


def test_without_config_the_per_user_file_is_created_and_used(tmp_path: Path) -> None:
    from patchbay.cli.configfile import default_config_path

    bundled = default_config_path()
    before = bundled.read_bytes()
    home, xdg, work = tmp_path / "home", tmp_path / "xdg", tmp_path / "work"
    for d in (home, xdg, work):
        d.mkdir()
    user_file = xdg / "patchbay" / "patchbay.json"
    env = clean_env(HOME=str(home), XDG_CONFIG_HOME=str(xdg))

    listed = cli("servers", "list", "--json", cwd=work, env=env)
    assert listed.code == 0, listed
    assert user_file.read_bytes() == before  # created from the bundled default on first use
    assert f"the per-user config {user_file}" in listed.err
    assert [v["name"] for v in listed.json()] == ["demo"]
    added = cli("servers", "add", "extra", "--", "some-cmd", cwd=work, env=env)
    assert added.code == 0, added
    assert list(json.loads(user_file.read_text())["mcpServers"]) == ["demo", "extra"]
    check = cli("config", "check", "--json", cwd=work, env=env)
    assert check.json()["path"] == str(user_file) and check.json()["servers"] == ["demo", "extra"]

    # XDG_CONFIG_HOME unset: ~/.config; a ./patchbay.json wins over both
    no_xdg = clean_env(HOME=str(home), XDG_CONFIG_HOME=None)
    assert cli("servers", "list", cwd=work, env=no_xdg).code == 0
    assert (home / ".config" / "patchbay" / "patchbay.json").read_bytes() == before
    write(work / "patchbay.json", {"mcpServers": {"local": {"command": "x"}}})
    local = cli("servers", "list", "--json", cwd=work, env=env)
    assert [v["name"] for v in local.json()] == ["local"] and "using patchbay.json directly" in local.err
    assert bundled.read_bytes() == before  # the bundled file is never written


def test_serve_without_config_serves_the_demo_from_the_per_user_file(tmp_path: Path) -> None:
    """What ``make run`` does from a fresh checkout: no --config, no per-user file yet."""
    from patchbay.cli.configfile import default_config_path

    bundled = default_config_path()
    before = bundled.read_bytes()
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchbay", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(HOME=str(home), XDG_CONFIG_HOME=str(xdg)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stderr.readline()
        user_file = xdg / "patchbay" / "patchbay.json"
        assert first.strip() == (
            f"patchbay: config the per-user config {user_file} (no ./patchbay.json here) "
            "(created from the bundled demo config)"
        ), first
        seen = ""
        while "ready: serving" not in seen:
            line = proc.stdout.readline()
            assert line, seen
            seen += line
        assert "demo__" in seen
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            tools = http.get("/api/tools").json()
            assert any(t["name"].startswith("demo__") for t in tools)
            r = http.post("/api/servers", json={"name": "more", "spec": {"command": "x", "enabled": False}})
            assert r.status_code == 201, r.text
        assert "more" in json.loads(user_file.read_text())["mcpServers"]
        assert bundled.read_bytes() == before
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_the_bundled_config_is_never_written(tmp_path: Path) -> None:
    from patchbay.cli.configfile import default_config_path
    from patchbay.config import load_config, save_config
    from patchbay.errors import ConfigError

    config = load_config(default_config_path())
    with pytest.raises(ConfigError, match="never written"):
        save_config(config)


def test_values_that_cannot_reach_a_process_are_refused_by_add_and_check(
    tmp_path: Path, in_process: InProcess
) -> None:
    write(tmp_path / "patchbay.json", {"mcpServers": {}})
    before = (tmp_path / "patchbay.json").read_bytes()
    nul = in_process(
        "servers",
        "add",
        "x",
        "--no-hub",
        "--spec",
        '{"command": "c", "args": ["a", "b", "\\u0000"]}',
        cwd=tmp_path,
    )
    assert nul.code == 2 and "server 'x': args[2]: contains a NUL byte" in one_error_line(nul)
    env_name = in_process("servers", "add", "x", "--no-hub", "--spec", '{"env": {"A=B": "v"}}', "--", "c",
                          cwd=tmp_path)  # fmt: skip
    assert env_name.code == 2 and "server 'x': env.A=B: " in one_error_line(env_name)
    huge = in_process(
        "servers", "add", "x", "--no-hub", "--spec", '{"timeout": 1e999}', "--", "c", cwd=tmp_path
    )
    assert huge.code == 2 and "not a finite number" in one_error_line(huge)
    assert (tmp_path / "patchbay.json").read_bytes() == before  # nothing half-applied

    write(tmp_path / "bad.json", '{"mcpServers": {"x": {"command": "c", "args": ["ok", "\\u0000"]}}}')
    write(tmp_path / "inf.json", '{"mcpServers": {"x": {"command": "c",\n "timeout": 1e999}}}')
    report = in_process("config", "check", "bad.json", "--json", cwd=tmp_path)
    assert report.code == 1
    assert [(e["server"], e["field"]) for e in report.json()["errors"]] == [("x", "args[1]")]
    inf = in_process("config", "check", "inf.json", "--json", cwd=tmp_path).json()
    assert not inf["valid"] and inf["errors"][0]["line"] == 2 and "finite" in inf["errors"][0]["message"]
