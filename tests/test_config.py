"""Config: parsing, validation, placeholders, atomic saves and runtime changes persisted through the Hub.

No server is ever started here: ``Hub.from_file`` is used without entering it, so no process is spawned.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from patchbay import config
from patchbay.config import (
    HubConfig,
    ServerSpec,
    expand,
    load_config,
    parse_config,
    parse_server_spec,
    placeholder_env,
    resolve,
    save_config,
    validate_server_name,
)
from patchbay.errors import ConfigError, DuplicateServerError, UnknownServerError
from patchbay.hub import Hub
from patchbay.supervisor import ServerState

# --- helpers ------------------------------------------------------------------------------------------


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


def dir_entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    """A Claude-Desktop-style file with unknown keys at both levels and placeholders."""
    return write_json(
        tmp_path / "claude_desktop_config.json",
        {
            "globalShortcut": "Ctrl+Space",
            "mcpServers": {
                "zeta": {"command": "zeta-server", "args": ["--port", "1"], "comment": "keep me"},
                "alpha": {
                    "command": "${PATCHBAY_PYTHON}",
                    "args": ["-m", "alpha"],
                    "env": {"API_KEY": "${env:ALPHA_KEY}"},
                    "x-vendor": {"nested": [1, 2, 3]},
                },
                "mid": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}},
            },
            "theme": {"dark": True},
        },
    )


# --- top-level keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["mcpServers", "servers"])
def test_both_top_level_keys_parse_and_key_is_remembered(key: str) -> None:
    cfg = parse_config(json.dumps({key: {"a": {"command": "x"}, "b": {"url": "http://h/mcp"}}}))
    assert cfg.servers_key == key
    assert list(cfg.servers) == ["a", "b"]
    assert cfg.servers["a"].command == "x"
    assert cfg.servers["b"].url == "http://h/mcp"
    assert list(cfg.to_document()) == [key]


def test_both_top_level_keys_is_an_error() -> None:
    text = json.dumps({"mcpServers": {}, "servers": {}})
    with pytest.raises(ConfigError) as ei:
        parse_config(text, source="f.json")
    msg = str(ei.value)
    assert msg.startswith("f.json:")
    assert "mcpServers" in msg and "servers" in msg


@pytest.mark.parametrize("text", ["", "   \n\t", "{}", '{"other": 1}', '{"mcpServers": null}'])
def test_no_servers_gives_an_empty_config(text: str) -> None:
    cfg = parse_config(text)
    assert cfg.servers == {}
    assert cfg.servers_key == "mcpServers"


def test_servers_value_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match=r"'servers' must be an object"):
        parse_config('{"servers": ["a", "b"]}')


def test_server_entry_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match=r"server 'a': expected an object, got str"):
        parse_config('{"mcpServers": {"a": "python x.py"}}')


# --- per-server fields --------------------------------------------------------------------------------


def test_every_field_parses() -> None:
    spec = parse_server_spec(
        "full",
        {
            "type": "stdio",
            "command": "srv",
            "args": ["a", "b"],
            "env": {"K": "V"},
            "cwd": "/tmp",
            "enabled": False,
            "disabled": True,
            "prefix": "p",
            "timeout": 2.5,
            "startTimeout": 7,
            "disabledTools": ["t1", "p__t2"],
            "maxRestarts": 0,
        },
    )
    assert spec.type == "stdio"
    assert spec.transport == "stdio"
    assert spec.command == "srv"
    assert spec.args == ["a", "b"]
    assert spec.env == {"K": "V"}
    assert spec.cwd == "/tmp"
    assert spec.enabled is False
    assert spec.disabled is True
    assert spec.is_enabled is False
    assert spec.prefix == "p"
    assert spec.timeout == 2.5
    assert spec.start_timeout == 7.0
    assert spec.disabled_tools == ["t1", "p__t2"]
    assert spec.max_restarts == 0


def test_remote_fields_parse() -> None:
    spec = parse_server_spec("r", {"type": "sse", "url": "https://h/sse", "headers": {"X-Key": "k"}})
    assert spec.transport == "sse"
    assert spec.url == "https://h/sse"
    assert spec.headers == {"X-Key": "k"}
    assert spec.command is None


def test_defaults() -> None:
    spec = parse_server_spec("d", {"command": "x"})
    assert spec.args == [] and spec.env == {} and spec.headers == {}
    assert spec.cwd is None and spec.url is None and spec.prefix is None and spec.timeout is None
    assert spec.enabled is True and spec.disabled is None and spec.is_enabled is True
    assert spec.start_timeout == 30.0
    assert spec.max_restarts == 5
    assert spec.disabled_tools == []
    assert spec.to_json() == {"command": "x"}


@pytest.mark.parametrize(
    ("entry", "enabled"),
    [
        ({"enabled": True}, True),
        ({"enabled": False}, False),
        ({"disabled": True}, False),
        ({"disabled": False}, True),
        ({"enabled": True, "disabled": True}, False),
        ({"enabled": False, "disabled": False}, False),
    ],
)
def test_is_enabled(entry: dict[str, Any], enabled: bool) -> None:
    assert parse_server_spec("s", {"command": "x", **entry}).is_enabled is enabled


def test_transport_inference() -> None:
    assert parse_server_spec("a", {"command": "x"}).transport == "stdio"
    assert parse_server_spec("b", {"url": "http://h/mcp"}).transport == "http"
    assert parse_server_spec("c", {"type": "sse", "url": "http://h/sse"}).transport == "sse"
    assert parse_server_spec("d", {"type": "http", "url": "http://h/mcp"}).transport == "http"


def test_stdio_without_command_is_an_error() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_server_spec("nocmd", {"args": ["x"]})
    assert "server 'nocmd'" in str(ei.value)
    assert "'command'" in str(ei.value)
    assert ei.value.server == "nocmd"


def test_explicit_stdio_with_only_url_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"server 's': .*needs 'command'"):
        parse_server_spec("s", {"type": "stdio", "url": "http://h"})


@pytest.mark.parametrize("kind", ["http", "sse"])
def test_remote_without_url_is_an_error(kind: str) -> None:
    with pytest.raises(ConfigError, match=rf"server 'r': a {kind} server needs 'url'"):
        parse_server_spec("r", {"type": kind})


def test_command_and_url_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"server 'both': give either 'command' .* or 'url' .*not both"):
        parse_server_spec("both", {"command": "x", "url": "http://h"})


@pytest.mark.parametrize(
    ("entry", "field", "fragment"),
    [
        ({"command": "x", "args": "not-a-list"}, "args", "valid list"),
        ({"command": "x", "args": ["ok", None]}, "args[1]", "valid string"),
        ({"command": "x", "env": ["A=1"]}, "env", "valid dictionary"),
        ({"command": "x", "env": {"A": None}}, "env.A", "valid string"),
        ({"command": "x", "headers": {"H": ["v"]}}, "headers.H", "valid string"),
        ({"command": "x", "timeout": 0}, "timeout", "greater than 0"),
        ({"command": "x", "timeout": "soon"}, "timeout", "valid number"),
        ({"command": "x", "startTimeout": -1}, "startTimeout", "greater than 0"),
        ({"command": "x", "maxRestarts": -1}, "maxRestarts", "greater than or equal to 0"),
        ({"command": "x", "maxRestarts": 1.5}, "maxRestarts", "integer"),
        ({"command": "x", "disabledTools": "t"}, "disabledTools", "valid list"),
        ({"command": "x", "enabled": "maybe"}, "enabled", "valid boolean"),
        ({"command": "x", "type": "websocket"}, "type", "'stdio', 'http' or 'sse'"),
        ({"command": ["x"]}, "command", "valid string"),
    ],
)
def test_validation_errors_name_server_and_field(entry: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_server_spec("x", entry)
    msg = str(ei.value)
    assert f"server 'x': {field}: " in msg
    assert fragment in msg
    assert ei.value.server == "x"
    assert ei.value.field == field


def test_numbers_are_coerced_to_strings_in_args_and_env() -> None:
    spec = parse_server_spec("n", {"command": "x", "args": ["--port", 8080], "env": {"N": 3}})
    assert spec.args == ["--port", "8080"]
    assert spec.env == {"N": "3"}


def test_several_bad_servers_are_all_reported() -> None:
    doc = {
        "mcpServers": {
            "good": {"command": "ok"},
            "bad1": {"command": "x", "args": "nope"},
            "bad2": {"url": "http://h", "command": "x"},
            "bad name": {"command": "x"},
            "bad3": {"command": "x", "timeout": -5, "maxRestarts": -1},
        }
    }
    with pytest.raises(ConfigError) as ei:
        parse_config(json.dumps(doc), source="cfg.json")
    msg = str(ei.value)
    assert msg.startswith("cfg.json: invalid configuration:")
    assert "server 'bad1': args: " in msg
    assert "server 'bad2': give either 'command'" in msg
    assert "invalid server name 'bad name'" in msg
    assert "server 'bad3': timeout: " in msg
    assert "server 'bad3': maxRestarts: " in msg
    assert "'good'" not in msg


# --- server names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "A-b_c.d", "x" * 64, "0", "my.server-2"])
def test_valid_server_names(name: str) -> None:
    validate_server_name(name)
    assert parse_server_spec(name, {"command": "x"}).command == "x"


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 65, "ünï", "a:b", "a$b", "tab\tname", "semi;colon"])
def test_invalid_server_names_are_rejected(name: str) -> None:
    with pytest.raises(ConfigError) as ei:
        validate_server_name(name)
    msg = str(ei.value)
    assert f"invalid server name {name!r}" in msg
    assert "1-64 letters, digits" in msg
    assert ei.value.server == name
    with pytest.raises(ConfigError, match="invalid server name"):
        parse_config(json.dumps({"mcpServers": {name: {"command": "x"}}}))


# regression: NAME_RE.match let a trailing newline through ("$" matches before a final "\n")
@pytest.mark.parametrize("name", ["foo\n", "x" * 64 + "\n", "\nfoo", "a\nb"])
def test_name_with_trailing_newline_is_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid server name"):
        validate_server_name(name)


# --- unparsable / unreadable files ----------------------------------------------------------------------


def test_invalid_json_reports_path_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "mcpServers": {\n    "a": {"command": "x",}\n  }\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}:3:")
    assert ":3:26: not valid JSON" in msg


def test_parse_config_invalid_json_uses_source() -> None:
    with pytest.raises(ConfigError, match=r"^my-src:1:2: not valid JSON"):
        parse_config("{,}", source="my-src")


def test_hub_from_file_never_touches_an_unparsable_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(b'{"mcpServers": {"a": {"command": "x"}, }  // trailing garbage\n')
    before = snapshot(path)
    entries = dir_entries(tmp_path)
    with pytest.raises(ConfigError, match=rf"^{path}:1:\d+: not valid JSON"):
        Hub.from_file(path)
    assert snapshot(path) == before
    assert dir_entries(tmp_path) == entries


@pytest.mark.parametrize("text", ["[]", '"str"', "42", "null", "true"])
def test_top_level_must_be_an_object(text: str) -> None:
    with pytest.raises(ConfigError, match="the top level must be a JSON object"):
        parse_config(text, source="t.json")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match=r"config file not found") as ei:
        load_config(path)
    assert str(path) in str(ei.value)
    with pytest.raises(ConfigError, match=r"config file not found"):
        Hub.from_file(path)
    assert not path.exists()


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"mcpServers": {"a": {"command": "caf\u00e9"}}}'.encode("latin-1"))
    before = snapshot(path)
    with pytest.raises(ConfigError, match=r"cannot read config file") as ei:
        Hub.from_file(path)
    assert str(path) in str(ei.value)
    assert snapshot(path) == before


def test_unreadable_path(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory.json"
    directory.mkdir()
    with pytest.raises(ConfigError, match=r"cannot read config file"):
        load_config(directory)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_permission_denied(tmp_path: Path) -> None:
    path = write_json(tmp_path / "secret.json", {"mcpServers": {}})
    path.chmod(0)
    try:
        with pytest.raises(ConfigError, match=r"cannot read config file"):
            load_config(path)
    finally:
        path.chmod(0o600)


def test_load_config_resolves_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_json(tmp_path / "c.json", {"servers": {"a": {"command": "x"}}})
    monkeypatch.chdir(tmp_path)
    cfg = load_config("c.json")
    assert cfg.path == (tmp_path / "c.json").resolve()
    assert cfg.path.is_absolute()
    assert cfg.base_dir == tmp_path.resolve()
    assert cfg.servers_key == "servers"


# --- placeholders ---------------------------------------------------------------------------------------


@pytest.fixture
def env() -> dict[str, str]:
    return {"HOME": "/home/u", "EMPTY": "", "KEY": "s3cr3t"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("${HOME}", "/home/u"),
        ("${env:HOME}", "/home/u"),
        ("${HOME}/bin:${KEY}", "/home/u/bin:s3cr3t"),
        ("${MISSING:-fallback}", "fallback"),
        ("${env:MISSING:-fb}", "fb"),
        ("${MISSING:-}", ""),
        ("${HOME:-unused}", "/home/u"),
        ("${EMPTY:-unused}", ""),
        ("${EMPTY}", ""),
        ("$$", "$"),
        ("price: $$5", "price: $5"),
        ("$${HOME}", "${HOME}"),
        ("$$$${HOME}", "$${HOME}"),
        ("a$b", "a$b"),
        ("$HOME", "$HOME"),
        ("${MISSING:-a b/c}", "a b/c"),
    ],
)
def test_expand(value: str, expected: str, env: dict[str, str]) -> None:
    assert expand(value, env, server="s", field="f") == expected


def test_expand_missing_variable_names_server_and_field(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as ei:
        expand("Bearer ${NOPE}", env, server="svc", field="headers.Authorization")
    msg = str(ei.value)
    assert msg.startswith("server 'svc': headers.Authorization: ")
    assert "'NOPE' is not set" in msg
    assert "${NOPE:-default}" in msg
    assert ei.value.server == "svc"
    assert ei.value.field == "headers.Authorization"


def test_placeholder_env_has_patchbay_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATCHBAY_PYTHON", raising=False)
    monkeypatch.delenv("PATCHBAY_CONFIG_DIR", raising=False)
    monkeypatch.setenv("SOME_VAR", "v")
    e = placeholder_env(tmp_path)
    assert e["PATCHBAY_PYTHON"] == sys.executable
    assert e["PATCHBAY_CONFIG_DIR"] == str(tmp_path)
    assert e["SOME_VAR"] == "v"
    assert "PATCHBAY_CONFIG_DIR" not in placeholder_env(None)


def test_resolve_expands_every_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PB_TOOL", "mytool")
    monkeypatch.setenv("PB_KEY", "k-123")
    monkeypatch.setenv("PB_SUB", "work")
    monkeypatch.delenv("PB_MISSING", raising=False)
    spec = parse_server_spec(
        "s",
        {
            "command": "${PATCHBAY_PYTHON}",
            "args": ["-m", "${env:PB_TOOL}", "--opt=${PB_MISSING:-dflt}", "$$literal"],
            "env": {"API_KEY": "${PB_KEY}", "PLAIN": "p"},
            "cwd": "${PB_SUB}/dir",
        },
    )
    r = resolve("s", spec, tmp_path)
    assert r.name == "s"
    assert r.transport == "stdio"
    assert r.command == placeholder_env(tmp_path)["PATCHBAY_PYTHON"]
    assert r.args == ("-m", "mytool", "--opt=dflt", "$literal")
    assert dict(r.env) == {"API_KEY": "k-123", "PLAIN": "p"}
    assert r.cwd == str((tmp_path / "work" / "dir").resolve())
    assert r.url is None
    assert dict(r.headers) == {}
    # the spec itself keeps the placeholders
    assert spec.command == "${PATCHBAY_PYTHON}"
    assert spec.env["API_KEY"] == "${PB_KEY}"


def test_resolve_expands_url_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PB_HOST", "example.org")
    monkeypatch.setenv("PB_TOKEN", "tok")
    spec = parse_server_spec(
        "r", {"url": "https://${PB_HOST}/mcp", "headers": {"Authorization": "Bearer ${env:PB_TOKEN}"}}
    )
    r = resolve("r", spec)
    assert r.transport == "http"
    assert r.url == "https://example.org/mcp"
    assert dict(r.headers) == {"Authorization": "Bearer tok"}
    assert r.command is None


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"command": "${PB_NOPE}"}, "command"),
        ({"command": "x", "args": ["ok", "${PB_NOPE}"]}, "args[1]"),
        ({"command": "x", "env": {"API_KEY": "${PB_NOPE}"}}, "env.API_KEY"),
        ({"command": "x", "cwd": "${env:PB_NOPE}"}, "cwd"),
        ({"url": "http://${PB_NOPE}/"}, "url"),
        ({"url": "http://h/", "headers": {"X-Token": "${PB_NOPE}"}}, "headers.X-Token"),
    ],
)
def test_resolve_missing_variable_names_server_and_field(
    entry: dict[str, Any], field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PB_NOPE", raising=False)
    spec = parse_server_spec("svc", entry)
    with pytest.raises(ConfigError) as ei:
        resolve("svc", spec)
    assert f"server 'svc': {field}: environment variable 'PB_NOPE' is not set" in str(ei.value)
    assert ei.value.server == "svc"
    assert ei.value.field == field


def test_relative_cwd_is_resolved_against_the_config_dir(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {})
    cfg = load_config(path)
    spec = parse_server_spec("s", {"command": "x", "cwd": "data/../work"})
    assert resolve("s", spec, cfg.base_dir).cwd == str((tmp_path / "work").resolve())
    absolute = parse_server_spec("s", {"command": "x", "cwd": "/opt/abs"})
    assert resolve("s", absolute, cfg.base_dir).cwd == "/opt/abs"
    # without a base directory a relative cwd is left as written
    assert resolve("s", spec, None).cwd == "data/../work"


def test_config_dir_placeholder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATCHBAY_CONFIG_DIR", raising=False)
    spec = parse_server_spec("s", {"command": "x", "args": ["${PATCHBAY_CONFIG_DIR}/script.py"]})
    assert resolve("s", spec, tmp_path).args == (f"{tmp_path}/script.py",)


# --- saving ---------------------------------------------------------------------------------------------


def test_round_trip_keeps_everything(cfg_file: Path) -> None:
    original = read_json(cfg_file)
    cfg = load_config(cfg_file)
    save_config(cfg)
    saved = read_json(cfg_file)
    assert saved == original
    assert list(saved) == ["globalShortcut", "mcpServers", "theme"]
    assert list(saved["mcpServers"]) == ["zeta", "alpha", "mid"]
    assert list(saved["mcpServers"]["alpha"]) == ["command", "args", "env", "x-vendor"]
    # placeholders are written back verbatim
    assert saved["mcpServers"]["alpha"]["command"] == "${PATCHBAY_PYTHON}"
    assert saved["mcpServers"]["alpha"]["env"]["API_KEY"] == "${env:ALPHA_KEY}"
    assert saved["mcpServers"]["mid"]["headers"]["Authorization"] == "Bearer ${TOKEN}"
    # pretty printed, newline terminated
    text = cfg_file.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert '\n  "mcpServers": {\n' in text


def test_round_trip_keeps_servers_key_and_non_ascii(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "mcp.json",
        {
            "inputs": [{"id": "k", "type": "promptString"}],
            "servers": {"s": {"command": "x", "note": "café ☕"}},
        },
    )
    save_config(load_config(path))
    saved = read_json(path)
    assert list(saved) == ["inputs", "servers"]
    assert saved["servers"]["s"]["note"] == "café ☕"
    assert "café ☕" in path.read_text(encoding="utf-8")


def test_save_without_path_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_config(HubConfig(servers={"a": parse_server_spec("a", {"command": "x"})}))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640])
def test_save_keeps_file_permissions(cfg_file: Path, mode: int) -> None:
    cfg_file.chmod(mode)
    save_config(load_config(cfg_file))
    assert stat.S_IMODE(cfg_file.stat().st_mode) == mode


def test_save_creates_a_new_file_private(tmp_path: Path) -> None:
    path = tmp_path / "new.json"
    cfg = HubConfig(servers={"a": parse_server_spec("a", {"command": "x"})}, path=path)
    save_config(cfg)
    assert read_json(path) == {"mcpServers": {"a": {"command": "x"}}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_is_a_rename_of_a_temp_file_in_the_same_dir(
    cfg_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        calls.append((str(src), str(dst)))
        assert Path(src).exists()
        assert json.loads(Path(src).read_text(encoding="utf-8"))["mcpServers"]["zeta"]["comment"] == "keep me"
        real_replace(src, dst)

    inode = cfg_file.stat().st_ino
    monkeypatch.setattr(os, "replace", spy)
    save_config(load_config(cfg_file))
    assert len(calls) == 1
    src, dst = calls[0]
    assert Path(dst) == cfg_file.resolve()
    assert Path(src).parent == cfg_file.resolve().parent
    assert Path(src).name.startswith(f".{cfg_file.name}.") and src.endswith(".tmp")
    assert not Path(src).exists()
    assert cfg_file.stat().st_ino != inode  # a new file was renamed over the old one


@pytest.mark.parametrize("target", ["replace", "fsync", "chmod"])
def test_failed_save_leaves_original_and_no_temp_files(
    cfg_file: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    cfg = load_config(cfg_file)
    cfg.servers["new"] = parse_server_spec("new", {"command": "n"})
    before = snapshot(cfg_file)
    entries = dir_entries(cfg_file.parent)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, target, boom)
    with pytest.raises(OSError, match="No space left"):
        save_config(cfg)
    monkeypatch.undo()
    assert snapshot(cfg_file) == before
    assert dir_entries(cfg_file.parent) == entries


def test_failed_write_leaves_original(cfg_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(cfg_file)
    before = snapshot(cfg_file)
    entries = dir_entries(cfg_file.parent)

    class Interrupted(BaseException):
        pass

    real_fdopen = os.fdopen

    class BrokenFile:
        def __init__(self, fd: int, mode: str) -> None:
            self._f = real_fdopen(fd, mode)

        def __enter__(self) -> BrokenFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self._f.close()

        def write(self, data: bytes) -> int:
            self._f.write(data[: len(data) // 2])
            raise Interrupted

    monkeypatch.setattr(config.os, "fdopen", BrokenFile)
    with pytest.raises(Interrupted):
        save_config(cfg)
    monkeypatch.undo()
    assert snapshot(cfg_file) == before
    assert dir_entries(cfg_file.parent) == entries


def test_to_json_only_writes_what_was_set_in_camel_case() -> None:
    spec = parse_server_spec(
        "s", {"command": "x", "startTimeout": 3, "disabledTools": ["a"], "maxRestarts": 1, "extra": {"k": 1}}
    )
    assert spec.to_json() == {
        "command": "x",
        "startTimeout": 3.0,
        "disabledTools": ["a"],
        "maxRestarts": 1,
        "extra": {"k": 1},
    }


# --- with_enabled ----------------------------------------------------------------------------------------


def test_with_enabled_uses_enabled_by_default() -> None:
    spec = parse_server_spec("s", {"command": "x"})
    off = spec.with_enabled(False)
    assert off is not spec
    assert off.is_enabled is False
    assert off.to_json() == {"command": "x", "enabled": False}
    assert spec.is_enabled is True and spec.to_json() == {"command": "x"}  # original untouched
    on = off.with_enabled(True)
    assert on.is_enabled is True
    assert on.to_json() == {"command": "x", "enabled": True}


def test_with_enabled_keeps_the_disabled_style() -> None:
    spec = parse_server_spec("s", {"command": "x", "disabled": False})
    off = spec.with_enabled(False)
    assert off.is_enabled is False
    assert off.to_json() == {"command": "x", "disabled": True}
    on = off.with_enabled(True)
    assert on.is_enabled is True
    assert on.to_json() == {"command": "x", "disabled": False}


def test_with_enabled_with_both_keys() -> None:
    spec = parse_server_spec("s", {"command": "x", "enabled": False, "disabled": True})
    on = spec.with_enabled(True)
    assert on.is_enabled is True
    assert on.to_json() == {"command": "x", "enabled": True, "disabled": False}
    off = on.with_enabled(False)
    assert off.is_enabled is False
    assert off.to_json()["disabled"] is True


def test_with_enabled_is_a_deep_copy() -> None:
    spec = parse_server_spec("s", {"command": "x", "args": ["a"], "env": {"K": "v"}, "custom": {"l": [1]}})
    copy = spec.with_enabled(False)
    copy.args.append("b")
    copy.env["K2"] = "w"
    assert spec.args == ["a"]
    assert spec.env == {"K": "v"}
    assert copy.to_json()["custom"] == {"l": [1]}


# --- runtime changes through the Hub ---------------------------------------------------------------------


async def test_hub_add_server_persists_at_once(cfg_file: Path) -> None:
    hub = Hub.from_file(cfg_file)
    status = await hub.add_server("newbie", {"command": "${PATCHBAY_PYTHON}", "args": ["-V"], "note": "n"})
    assert status.name == "newbie"
    assert status.state == ServerState.STOPPED  # the hub is not started: nothing runs
    assert status.pid is None
    saved = read_json(cfg_file)
    assert list(saved) == ["globalShortcut", "mcpServers", "theme"]
    assert list(saved["mcpServers"]) == ["zeta", "alpha", "mid", "newbie"]
    assert saved["mcpServers"]["newbie"] == {"command": "${PATCHBAY_PYTHON}", "args": ["-V"], "note": "n"}
    assert saved["mcpServers"]["zeta"]["comment"] == "keep me"
    assert saved["mcpServers"]["alpha"]["env"] == {"API_KEY": "${env:ALPHA_KEY}"}
    assert saved["theme"] == {"dark": True}
    assert hub.servers == ["zeta", "alpha", "mid", "newbie"]
    assert load_config(cfg_file).servers["newbie"].command == "${PATCHBAY_PYTHON}"


async def test_hub_add_disabled_server(cfg_file: Path) -> None:
    hub = Hub.from_file(cfg_file)
    status = await hub.add_server("off", {"command": "x", "disabled": True})
    assert status.state == ServerState.DISABLED
    assert status.enabled is False
    assert read_json(cfg_file)["mcpServers"]["off"] == {"command": "x", "disabled": True}


async def test_hub_add_server_spec_object(cfg_file: Path) -> None:
    hub = Hub.from_file(cfg_file)
    await hub.add_server("obj", ServerSpec(command="c", args=["1"]))
    assert read_json(cfg_file)["mcpServers"]["obj"] == {"command": "c", "args": ["1"]}


async def test_hub_duplicate_add_leaves_file_unchanged(cfg_file: Path) -> None:
    hub = Hub.from_file(cfg_file)
    before = snapshot(cfg_file)
    with pytest.raises(DuplicateServerError, match="'alpha' already exists"):
        await hub.add_server("alpha", {"command": "other"})
    assert snapshot(cfg_file) == before
    assert hub.server_spec("alpha").args == ["-m", "alpha"]


@pytest.mark.parametrize(
    ("name", "spec", "match"),
    [
        ("bad", {"command": "x", "url": "http://h"}, "not both"),
        ("bad", {"args": ["x"]}, "needs 'command'"),
        ("bad", {"command": "x", "timeout": -1}, r"server 'bad': timeout: "),
        ("bad name", {"command": "x"}, "invalid server name"),
        ("", {"command": "x"}, "invalid server name"),
    ],
)
async def test_hub_invalid_add_leaves_file_unchanged(
    cfg_file: Path, name: str, spec: dict[str, Any], match: str
) -> None:
    hub = Hub.from_file(cfg_file)
    before = snapshot(cfg_file)
    with pytest.raises(ConfigError, match=match):
        await hub.add_server(name, spec)
    assert snapshot(cfg_file) == before
    assert name not in hub.servers
    assert dir_entries(cfg_file.parent) == [cfg_file.name]


async def test_hub_set_enabled_writes_enabled(cfg_file: Path) -> None:
    hub = Hub.from_file(cfg_file)
    status = await hub.set_enabled("zeta", False)
    assert status.state == ServerState.DISABLED
    assert status.enabled is False
    entry = read_json(cfg_file)["mcpServers"]["zeta"]
    assert entry == {
        "command": "zeta-server",
        "args": ["--port", "1"],
        "comment": "keep me",
        "enabled": False,
    }
    assert "disabled" not in entry
    assert hub.server_spec("zeta").is_enabled is False

    status = await hub.set_enabled("zeta", True)
    assert status.enabled is True
    assert status.state == ServerState.DISABLED  # not started: enabling does not start anything
    assert read_json(cfg_file)["mcpServers"]["zeta"]["enabled"] is True
    assert list(read_json(cfg_file)["mcpServers"]) == ["zeta", "alpha", "mid"]


async def test_hub_set_enabled_keeps_disabled_style(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"mcpServers": {"s": {"command": "x", "disabled": False}}})
    hub = Hub.from_file(path)
    await hub.set_enabled("s", False)
    assert read_json(path)["mcpServers"]["s"] == {"command": "x", "disabled": True}
    await hub.set_enabled("s", True)
    assert read_json(path)["mcpServers"]["s"] == {"command": "x", "disabled": False}


async def test_hub_update_server_replaces_in_place(cfg_file: Path) -> None:
    hub = Hub.from_file(cfg_file)
    status = await hub.update_server("alpha", {"command": "alpha2", "env": {"K": "${K2}"}, "prefix": "al"})
    assert status.name == "alpha"
    saved = read_json(cfg_file)
    assert list(saved["mcpServers"]) == ["zeta", "alpha", "mid"]  # position kept
    assert saved["mcpServers"]["alpha"] == {"command": "alpha2", "env": {"K": "${K2}"}, "prefix": "al"}
    assert hub.server_spec("alpha").prefix == "al"
    assert hub.servers == ["zeta", "alpha", "mid"]


async def test_hub_invalid_update_leaves_file_unchanged(cfg_file: Path) -> None:
    hub = Hub.from_file(cfg_file)
    before = snapshot(cfg_file)
    with pytest.raises(ConfigError, match=r"server 'alpha': args: "):
        await hub.update_server("alpha", {"command": "x", "args": "no"})
    assert snapshot(cfg_file) == before
    assert hub.server_spec("alpha").command == "${PATCHBAY_PYTHON}"


async def test_hub_remove_server(cfg_file: Path) -> None:
    hub = Hub.from_file(cfg_file)
    await hub.remove_server("alpha")
    saved = read_json(cfg_file)
    assert list(saved["mcpServers"]) == ["zeta", "mid"]
    assert list(saved) == ["globalShortcut", "mcpServers", "theme"]
    assert hub.servers == ["zeta", "mid"]
    # and it can be added again afterwards
    await hub.add_server("alpha", {"command": "again"})
    assert list(read_json(cfg_file)["mcpServers"]) == ["zeta", "mid", "alpha"]


@pytest.mark.parametrize("op", ["update", "remove", "enable", "disable", "status"])
async def test_hub_unknown_server(cfg_file: Path, op: str) -> None:
    hub = Hub.from_file(cfg_file)
    before = snapshot(cfg_file)
    with pytest.raises(UnknownServerError) as ei:
        if op == "update":
            await hub.update_server("ghost", {"command": "x"})
        elif op == "remove":
            await hub.remove_server("ghost")
        elif op == "enable":
            await hub.set_enabled("ghost", True)
        elif op == "disable":
            await hub.set_enabled("ghost", False)
        else:
            hub.server_status("ghost")
    assert "unknown server 'ghost'" in str(ei.value)
    assert "known: zeta, alpha, mid" in str(ei.value)
    assert ei.value.known == ["zeta", "alpha", "mid"]
    assert snapshot(cfg_file) == before


async def test_hub_failed_save_changes_nothing(cfg_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub.from_file(cfg_file)
    before = snapshot(cfg_file)
    entries = dir_entries(cfg_file.parent)

    def boom(*args: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(PermissionError):
        await hub.add_server("x", {"command": "x"})
    with pytest.raises(PermissionError):
        await hub.set_enabled("zeta", False)
    with pytest.raises(PermissionError):
        await hub.remove_server("mid")
    monkeypatch.undo()
    assert snapshot(cfg_file) == before
    assert dir_entries(cfg_file.parent) == entries
    assert hub.servers == ["zeta", "alpha", "mid"]
    assert list(hub.config.servers) == ["zeta", "alpha", "mid"]
    assert hub.server_spec("zeta").is_enabled is True
    assert hub.config.servers["zeta"].is_enabled is True


async def test_hub_keeps_permissions_and_servers_key(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "mcp.json", {"servers": {"a": {"type": "stdio", "command": "x"}}, "inputs": []}
    )
    path.chmod(0o600)
    hub = Hub.from_file(path)
    await hub.add_server("b", {"command": "y"})
    await hub.set_enabled("a", False)
    saved = read_json(path)
    assert list(saved) == ["servers", "inputs"]
    assert saved["servers"] == {
        "a": {"type": "stdio", "command": "x", "enabled": False},
        "b": {"command": "y"},
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dir_entries(tmp_path) == ["mcp.json"]


async def test_hub_from_dict_never_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    hub = Hub.from_dict({"mcpServers": {"a": {"command": "x"}}})
    await hub.add_server("b", {"command": "y"})
    await hub.set_enabled("a", False)
    assert list(tmp_path.iterdir()) == []
    assert hub.config.to_document() == {
        "mcpServers": {"a": {"command": "x", "enabled": False}, "b": {"command": "y"}}
    }


def test_duplicate_server_names_are_an_error_not_a_silent_merge() -> None:
    text = '{"mcpServers": {"a": {"command": "x"}, "a": {"command": "y"}}}'
    with pytest.raises(ConfigError, match="key 'a' appears twice"):
        parse_config(text, source="dup.json")


def test_integer_timeouts_are_saved_as_integers(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"mcpServers": {"a": {"command": "x", "timeout": 5, "startTimeout": 10}}}')
    cfg = load_config(path)
    save_config(cfg)
    assert '"timeout": 5,' in path.read_text() and '"startTimeout": 10' in path.read_text()


# --- values that cannot reach a process, non-finite numbers, crashed saves ------------------------------


@pytest.mark.parametrize(
    ("entry", "field", "fragment"),
    [
        ({"command": "a\0b"}, "command", "NUL byte"),
        ({"command": "x", "args": ["ok", "fine", "a\0"]}, "args[2]", "NUL byte"),
        ({"command": "x", "cwd": "/tmp\0x"}, "cwd", "NUL byte"),
        ({"command": "x", "env": {"A": "v\0"}}, "env.A", "NUL byte"),
        ({"command": "x", "env": {"A\0B": "v"}}, "env.A\0B", "NUL byte"),
        ({"command": "x", "env": {"A=B": "v"}}, "env.A=B", "contains '='"),
        ({"command": "x", "env": {"": "v"}}, "env", "cannot be empty"),
        ({"url": "http://h/\0"}, "url", "NUL byte"),
        ({"url": "http://h/", "headers": {"H": "\0"}}, "headers.H", "NUL byte"),
        ({"command": "x", "timeout": float("inf")}, "timeout", "finite number"),
        ({"command": "x", "startTimeout": float("nan")}, "startTimeout", "finite number"),
    ],
)
def test_values_a_process_cannot_take_are_refused_naming_the_field(
    entry: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_server_spec("x", entry)
    assert f"server 'x': {field}: " in str(ei.value) and fragment in str(ei.value), str(ei.value)
    assert (ei.value.server, ei.value.field) == ("x", field)


def test_a_nul_byte_in_the_file_fails_loading_with_server_and_field(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "p.json", {"mcpServers": {"x": {"command": "echo", "args": ["a", "b", "c\0"]}}}
    )
    with pytest.raises(ConfigError, match=r"server 'x': args\[2\]: contains a NUL byte"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"server 'x': args\[2\]: contains a NUL byte"):
        Hub.from_file(path)


def test_a_nul_byte_from_a_placeholder_is_refused_by_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    # os.environ cannot hold a NUL, but the placeholder environment is patchbay's own mapping
    monkeypatch.setattr(config, "placeholder_env", lambda base_dir=None: {"V": "a\0b"})
    spec = parse_server_spec("x", {"command": "echo", "args": ["ok", "${V}"]})
    with pytest.raises(ConfigError, match=r"server 'x': args\[1\]: contains a NUL byte") as ei:
        resolve("x", spec)
    assert ei.value.field == "args[1]"


@pytest.mark.parametrize("literal", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused_anywhere_in_the_file(tmp_path: Path, literal: str) -> None:
    for text in (
        f'{{"mcpServers": {{"x": {{"command": "c", "timeout": {literal}}}}}}}',
        f'{{"mcpServers": {{}},\n "other": {{"n": {literal}}}}}',  # an unknown key would be written back
    ):
        path = tmp_path / "p.json"
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"not a finite number") as ei:
            load_config(path)
        assert f"{path}:" in str(ei.value)


def test_save_never_writes_non_standard_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    cfg = HubConfig(document={"mcpServers": {}, "odd": float("inf")}, path=path)
    with pytest.raises(ConfigError, match="NaN or Infinity"):
        save_config(cfg)
    assert not path.exists()
    big = HubConfig(servers={"a": parse_server_spec("a", {"command": "x", "timeout": 1e300})}, path=path)
    save_config(big)
    assert read_json(path)["mcpServers"]["a"]["timeout"] == 1e300


_CRASHING_SAVE = """
import os, sys
from patchbay import config
def crash(src, dst):
    print(src, flush=True)
    os._exit(9)   # killed between writing the temp file and renaming it
os.replace = crash
cfg = config.load_config(sys.argv[1])
config.save_config(cfg)
"""


def test_temp_files_of_a_crashed_save_are_removed_later(tmp_path: Path) -> None:
    import subprocess

    path = write_json(tmp_path / "patchbay.json", {"mcpServers": {"a": {"command": "x"}}})
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASHING_SAVE, str(path)], capture_output=True, text=True, timeout=60
    )
    assert crashed.returncode == 9, crashed.stderr
    left = Path(crashed.stdout.strip())
    assert left.exists() and left.parent == tmp_path and left.name.startswith(".patchbay.json.")
    others = [tmp_path / ".other.json.abcdefgh.tmp", tmp_path / ".patchbay.json.bak", tmp_path / "notes.tmp"]
    for other in others:
        other.write_text("someone else's")
    old = left.stat().st_mtime - 3600
    for p in (left, *others):
        os.utime(p, (old, old))
    fresh = tmp_path / ".patchbay.json.zzzzzzzz.tmp"  # a save in progress elsewhere: too young to touch
    fresh.write_text("{}")

    load_config(path)
    assert not left.exists()
    assert fresh.exists() and all(p.exists() for p in others)
    os.utime(fresh, (old, old))
    save_config(load_config(path))
    assert not fresh.exists() and all(p.exists() for p in others)
    assert read_json(path) == {"mcpServers": {"a": {"command": "x"}}}
