-- The realistic app's request mix for wrk, 20 requests in a fixed cycle:
-- 7x GET /api/items, 6x GET /api/report, 4x POST /api/orders (200/201, ~2 ms
-- of work each), 1x 404, 1x 500 (app exception), 1x 503 (answered by the app).
local cycle = {}
local i = 0

init = function(args)
  local lines = {}
  for n = 1, 8 do
    lines[n] = string.format('{"sku": "s%d", "qty": %d, "price": 9.99}', n, n % 3 + 1)
  end
  local body = '{"customer": 42, "lines": [' .. table.concat(lines, ", ") .. ']}'
  local items = wrk.format("GET", "/api/items")
  local report = wrk.format("GET", "/api/report")
  local orders = wrk.format("POST", "/api/orders", {["Content-Type"] = "application/json"}, body)
  local missing = wrk.format("GET", "/api/nope")
  local fail = wrk.format("GET", "/api/fail")
  local busy = wrk.format("GET", "/api/busy")
  cycle = {
    items, report, orders, items, report, missing, items, orders, report, items,
    report, fail, items, orders, report, items, busy, report, orders, items,
  }
end

request = function()
  i = i % #cycle + 1
  return cycle[i]
end
