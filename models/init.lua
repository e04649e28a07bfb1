-- models/init.lua: the model registry.
--   local models = require 'models'
--   models.list()                 -> the names with a line each
--   models.build{name = 'dual', backbone = 'resnet18', classes = 2, nam_at = 1,
--                variant = 'nam+db+nvcf'}
-- Names: resnet18, shufflenetv2 (plain backbones with a classifier), dual (the paper's
-- model; options in models/nonlocal.lua), se, cbam, nonlocal, ccnet (ResNet18 with the
-- baseline embedded; models/attention.lua).
local M = {}

local registry = {
  resnet18 = { 'ResNet18 (torchvision names)', function(o) return require('models.resnet').resnet18(o) end },
  shufflenetv2 = { 'ShuffleNetV2 x1.0 or x0.5 (opts.width)', function(o)
    return require('models.shufflenetv2').shufflenet_v2(o)
  end },
  dual = { 'the dual-branch NAM/NVCF classifier (backbone, nam_at, variant, nam)', function(o)
    return require('models.nonlocal').DualBranch(o)
  end },
}
for _, kind in ipairs { 'se', 'cbam', 'nonlocal', 'ccnet' } do
  registry[kind] = { 'ResNet18 with ' .. kind .. ' attention embedded', function(o)
    return require('models.attention').resnet18_with(kind, o)
  end }
end

function M.list()
  local names = {}
  for name, entry in pairs(registry) do names[#names + 1] = { name = name, about = entry[1] } end
  table.sort(names, function(a, b) return a.name < b.name end)
  return names
end

-- Builds opts.name with the remaining options; classes defaults to 2.
function M.build(opts)
  opts = opts or {}
  local entry = registry[opts.name or 'dual']
  if not entry then
    local known = {}
    for _, e in ipairs(M.list()) do known[#known + 1] = e.name end
    error('models.build: unknown model ' .. tostring(opts.name) .. ' (' .. table.concat(known, ', ') .. ')', 2)
  end
  local o = {}
  for k, v in pairs(opts) do if k ~= 'name' then o[k] = v end end
  o.classes = o.classes or 2
  return entry[2](o)
end

return M
