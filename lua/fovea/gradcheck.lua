-- gradcheck.lua: checks the gradients of a function against central differences in
-- float64, as Torch7's nn.Jacobian did. The output is projected on fixed random
-- weights r, so one backward gives d(sum(out * r))/dx for every input at once.
--   fv.gradcheck(function(x, w) return x:matmul(w) end, {x, w}, {eps = 1e-6})
-- Inputs must be float64; those with requires_grad are checked. Raises an error naming
-- the input, the element and both values at the first mismatch; returns true.
local fv_tensor = require 'fovea.tensor'
local clib = require 'fovea.clib'

local raise = clib.raise

-- The 1-based index tuples of every element of a tensor of the given sizes.
local function each_index(sizes)
  local out, idx = {}, {}
  local function walk(d)
    if d > #sizes then
      out[#out + 1] = { unpack(idx) }
      return
    end
    for i = 1, sizes[d] do
      idx[d] = i
      walk(d + 1)
    end
  end
  if #sizes == 0 then return { {} } end
  walk(1)
  return out
end

local function as_list(out)
  if fv_tensor.is_tensor(out) then return { out } end
  return out
end

return function(fn, inputs, opts)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 1e-6, opts.atol or 1e-5, opts.rtol or 1e-3
  for i, x in ipairs(inputs) do
    if fv_tensor.is_tensor(x) and x:dtype() ~= 'float64' then
      raise('fovea: gradcheck: input ' .. i .. ' is ' .. x:dtype() .. '; gradcheck needs float64 inputs')
    end
  end
  local outputs = as_list(fn(unpack(inputs)))
  local weights = {}
  for k, out in ipairs(outputs) do
    weights[k] = fv_tensor.randn(out:size(), { dtype = 'float64', seed = 1000 + k })
  end
  local function projected(outs)
    local total = 0
    for k, out in ipairs(as_list(outs)) do total = total + (out * weights[k]):sum():item() end
    return total
  end

  for _, x in ipairs(inputs) do
    if fv_tensor.is_tensor(x) and x.requires_grad then x.grad = nil end
  end
  local loss
  for k, out in ipairs(outputs) do
    local term = (out * weights[k]):sum()
    loss = loss and loss + term or term
  end
  loss:backward()

  for i, x in ipairs(inputs) do
    if fv_tensor.is_tensor(x) and x.requires_grad then
      local analytic = x.grad
      if analytic == nil then raise(('fovea: gradcheck: input %d received no gradient'):format(i)) end
      for _, idx in ipairs(each_index(x:size())) do
        local original = x:get(unpack(idx))
        local plus, minus = fv_tensor.no_grad(function()
          x:set(original + eps, unpack(idx))
          local p = projected(fn(unpack(inputs)))
          x:set(original - eps, unpack(idx))
          local m = projected(fn(unpack(inputs)))
          x:set(original, unpack(idx))
          return p, m
        end)
        local numeric = (plus - minus) / (2 * eps)
        local got = analytic:get(unpack(idx))
        if math.abs(got - numeric) > atol + rtol * math.abs(numeric) then
          raise(('fovea: gradcheck: input %d element (%s): analytic %.10g, numeric %.10g'):format(
            i, table.concat(idx, ','), got, numeric))
        end
      end
    end
  end
  return true
end
