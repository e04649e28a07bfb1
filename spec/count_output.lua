-- count_output.lua: busted output handler. Prints busted's plain terminal report, then
-- a last line "N passed, N failed" (errors count as failures; skipped specs are named
-- on the line before it). make test and .ci/run use it.
return function(options)
  local busted = require 'busted'
  local handler = require 'busted.outputHandlers.plainTerminal'(options)

  local function summary()
    local failed = #handler.failures + #handler.errors
    if #handler.pendings > 0 then
      io.write(#handler.pendings, ' skipped\n')
    end
    io.write(#handler.successes, ' passed, ', failed, ' failed\n')
    io.flush()
    return nil, true
  end

  local subscribe = handler.subscribe
  handler.subscribe = function(self, opts)
    subscribe(self, opts)
    busted.subscribe({ 'suite', 'end' }, summary)
  end
  return handler
end
