-- recipes/tables.lua: the paper's tables, each row trained and evaluated with the same
-- protocol (recipes/job.lua) and reported as mean +- std over the repeats in Markdown
-- (results.md) and CSV (results.csv):
--   --table 1   ablation (Table 1): baseline, +NAM (serial), +NAM+DB, +NAM+DB+NVCF, for
--               --backbone (resnet18, shufflenetv2, or both)
--   --table 2   comparison (Table 2): ResNet18, SE, CBAM, Non-local, CCNet and the
--               dual-branch model
--   --table 3   NAM placement (Table 3): the full model with NAM at e1, e2, e3, e4 and at
--               the stem (the placement the paper could not afford)
--   --table compare   plain ResNet18 against the dual-branch model, same data and budget
-- Data: --data (MESSIDOR, or COVID-19 with --dataset covid19), or the built-in set.
--   luajit recipes/tables.lua --table 2 --data /path/to/MESSIDOR
package.path = './?.lua;./?/init.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local job = require 'recipes.job'

local spec = {
  { 'table', '1', 'which table: 1 (ablation), 2 (attention baselines), 3 (NAM placement) or compare' },
  { 'dataset', 'messidor', 'messidor or covid19 (with --data)' },
  { 'data', '', 'data set folder (empty: the built-in synthetic set)' },
  { 'task', 'normal-vs-abnormal', 'MESSIDOR task' },
  { 'out', '', 'output folder (empty: runs/table-N)' },
}
for _, o in ipairs(require 'recipes.options') do
  if o[1] == 'backbone' then
    spec[#spec + 1] = { 'backbone', 'resnet18', 'resnet18, shufflenetv2 or both (table 1)' }
  else
    spec[#spec + 1] = o
  end
end

local opts = fv.cli.parse(arg, spec, {
  usage = 'usage: luajit recipes/tables.lua --table N [options]',
  about = 'Reproduces the rows of the paper\'s Table 1, 2 or 3.',
})
if opts.out == '' then opts.out = 'runs/table-' .. opts.table end

local function dual(label, backbone, variant, nam_at)
  return { label = label, model = { name = 'dual', backbone = backbone, variant = variant, nam_at = nam_at } }
end

local tables = {
  ['1'] = function(o)
    local rows = {}
    local backbones = o.backbone == 'both' and { 'resnet18', 'shufflenetv2' } or { o.backbone }
    for _, b in ipairs(backbones) do
      rows[#rows + 1] = dual(b, b, 'baseline', 1)
      rows[#rows + 1] = dual(b .. ' +NAM', b, 'nam', o.nam_at)
      rows[#rows + 1] = dual(b .. ' +NAM+DB', b, 'nam+db', o.nam_at)
      rows[#rows + 1] = dual(b .. ' +NAM+DB+NVCF', b, 'nam+db+nvcf', o.nam_at)
    end
    return rows
  end,
  ['2'] = function(o)
    return {
      dual('ResNet18', 'resnet18', 'baseline', 1),
      { label = 'SE', model = { name = 'se' } },
      { label = 'CBAM', model = { name = 'cbam' } },
      { label = 'Non-local', model = { name = 'nonlocal' } },
      { label = 'CCNet', model = { name = 'ccnet' } },
      dual('Ours (NAM+DB+NVCF)', 'resnet18', 'nam+db+nvcf', o.nam_at),
    }
  end,
  compare = function(o)
    return { dual('ResNet18', 'resnet18', 'baseline', 1), dual('Ours (NAM+DB+NVCF)', 'resnet18', 'nam+db+nvcf', o.nam_at) }
  end,
  ['3'] = function(o)
    local rows = {}
    for _, at in ipairs { 1, 2, 3, 4, 0 } do
      rows[#rows + 1] = dual(at == 0 and 'NAM at stem' or ('NAM at e' .. at), o.backbone, 'nam+db+nvcf', at)
    end
    return rows
  end,
}
if not tables[opts.table] then
  io.stderr:write('--table must be 1, 2, 3 or compare\n')
  os.exit(2)
end

job.run(opts, {
  name = 'table ' .. opts.table,
  dataset = function(o)
    if o.data == '' then return nil end
    if o.dataset == 'covid19' then return fv.data.datasets.COVID19(o.data) end
    return fv.data.datasets.MESSIDOR(o.data, { task = o.task })
  end,
  defaults = job.DEFAULTS,
  rows = tables[opts.table],
})
