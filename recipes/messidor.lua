-- recipes/messidor.lua: the main job: the paper's protocol end to end.
--   luajit recipes/messidor.lua                       built-in synthetic set, small and quick
--   luajit recipes/messidor.lua --data /path/to/MESSIDOR --size 386 --epochs 30 --repeats 5
-- Data: MESSIDOR as distributed (Base11..Base34 with the annotation spreadsheets), or,
-- with no --data, the built-in synthetic tiny-lesion set, generated on first use into
-- the cache folder. Pipeline: resize to --size, CLAHE, random flips and rotation for
-- training; a stratified 90/10 split per repeat (seeds seed, seed+1, ...); the model
-- (default: the dual-branch ResNet18 with NAM on e1 and NVCF) trained with Adam.
-- Outputs in --out: results.md and results.csv (mean +- std over repeats), and per repeat
-- run-N/log.csv, run-N/last.safetensors (resumable), run-N/best.safetensors,
-- run-N/curves.png, run-N/roc.png and run-N/gradcam-K.png.
-- --help lists every option with its default.
package.path = './?.lua;./?/init.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local job = require 'recipes.job'

local spec = {
  { 'data', '', 'MESSIDOR folder (empty: the built-in synthetic set)' },
  { 'task', 'normal-vs-abnormal', 'normal-vs-abnormal, referable, grade or edema' },
  { 'out', 'runs/messidor', 'output folder' },
}
for _, o in ipairs(require 'recipes.options') do spec[#spec + 1] = o end

local opts = fv.cli.parse(arg, spec, {
  usage = 'usage: luajit recipes/messidor.lua [options]',
  about = 'Trains and evaluates the dual-branch non-local attention classifier on MESSIDOR (or the built-in set).',
})
job.run(opts, {
  name = 'messidor',
  dataset = function(o)
    if o.data == '' then return nil end
    return fv.data.datasets.MESSIDOR(o.data, { task = o.task })
  end,
  defaults = job.DEFAULTS,
})
