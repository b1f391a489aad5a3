-- wrk script for bench/http.py: every request is a POST of an MCP `tools/call` with its own JSON-RPC id,
-- and every response is checked. Configured through the environment (bench/http.py sets it):
--
--   BENCH_TOOL      tool to call (e.g. floor__echo)                              required
--   BENCH_TEXT      the `text` argument; a response must echo it back           default "patchbay-bench"
--   BENCH_PROTOCOL  MCP-Protocol-Version header (2025-11-25, or 2026-07-28)      default 2025-11-25
--   BENCH_SESSION   Mcp-Session-Id of a session bench/http.py opened (handshake era); empty for none
--   BENCH_MODERN    "1": 2026-07-28 request (no session; `_meta` envelope, Mcp-Method and Mcp-Name headers)
--
-- A response counts as an error result unless its status is 200 and its body (plain JSON, or SSE
-- `event: message` / `data: {...}` frames) holds a JSON-RPC `result` that echoes the text, with no JSON-RPC
-- `error` and no `"isError": true`. done() prints one line `WRKJSON {...}` that bench/http.py parses.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

function init(args)
  tool = env("BENCH_TOOL", nil)
  if tool == nil then error("BENCH_TOOL is not set") end
  text = env("BENCH_TEXT", "patchbay-bench")
  local protocol = env("BENCH_PROTOCOL", "2025-11-25")
  local session = env("BENCH_SESSION", nil)
  local modern = env("BENCH_MODERN", "0") == "1"

  headers = {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["MCP-Protocol-Version"] = protocol,
  }
  if session ~= nil then headers["Mcp-Session-Id"] = session end
  local meta = ""
  if modern then
    headers["Mcp-Method"] = "tools/call"
    headers["Mcp-Name"] = tool
    meta = ',"_meta":{"io.modelcontextprotocol/protocolVersion":"' .. protocol .. '",'
      .. '"io.modelcontextprotocol/clientCapabilities":{},'
      .. '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"4.1"}}'
  end
  prefix = '{"jsonrpc":"2.0","id":'
  suffix = ',"method":"tools/call","params":{"name":"' .. tool .. '","arguments":{"text":"' .. text .. '"}'
    .. meta .. '}}'

  -- ids are unique across threads: thread n uses n * 1e9 + 1, + 2, ...
  next_id = tid * 1000000000
  responses, errors, bad_status, rpc_errors, tool_errors, no_result, sse = 0, 0, 0, 0, 0, 0, 0
end

function request()
  next_id = next_id + 1
  return wrk.format("POST", nil, headers, prefix .. string.format("%d", next_id) .. suffix)
end

function response(status, hdrs, body)
  responses = responses + 1
  if status ~= 200 then
    bad_status = bad_status + 1
    errors = errors + 1
    return
  end
  if body:find("^%s*event:") or body:find("^%s*data:") or body:find("^%s*id:") then
    sse = sse + 1
  end
  if body:find('"isError"%s*:%s*true') then
    tool_errors = tool_errors + 1
    errors = errors + 1
  elseif body:find('"error"%s*:%s*{') then
    rpc_errors = rpc_errors + 1
    errors = errors + 1
  elseif not body:find('"result"%s*:') or not body:find(text, 1, true) then
    no_result = no_result + 1
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local totals = { responses = 0, errors = 0, bad_status = 0, rpc_errors = 0, tool_errors = 0,
                   no_result = 0, sse = 0 }
  for _, t in ipairs(threads) do
    for k, _ in pairs(totals) do
      totals[k] = totals[k] + (t:get(k) or 0)
    end
  end
  local e = summary.errors
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"bytes":%d', summary.bytes),
    string.format('"socket_connect":%d', e.connect),
    string.format('"socket_read":%d', e.read),
    string.format('"socket_write":%d', e.write),
    string.format('"socket_timeout":%d', e.timeout),
    string.format('"status_errors":%d', e.status),
    string.format('"lat_mean_us":%.1f', latency.mean),
    string.format('"lat_max_us":%d', latency.max),
    string.format('"p50_us":%d', latency:percentile(50)),
    string.format('"p90_us":%d', latency:percentile(90)),
    string.format('"p99_us":%d', latency:percentile(99)),
    string.format('"p999_us":%d', latency:percentile(99.9)),
  }
  for k, v in pairs(totals) do
    table.insert(parts, string.format('"%s":%d', k, v))
  end
  io.write("WRKJSON {" .. table.concat(parts, ",") .. "}\n")
end
