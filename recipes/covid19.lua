-- recipes/covid19.lua: the paper's second data set: the COVID-19 Radiography Database
-- (version 1: COVID-19, NORMAL, Viral Pneumonia; or the later */images/ layout), gray
-- X-rays replicated to 3 channels, 3 classes with macro-averaged metrics (one-vs-rest
-- AUC). Same protocol and outputs as recipes/messidor.lua; --help lists the options.
--   luajit recipes/covid19.lua --data /path/to/COVID-19_Radiography_Database
package.path = './?.lua;./?/init.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local job = require 'recipes.job'

local spec = {
  { 'data', '', 'COVID-19 Radiography Database folder (empty: the built-in synthetic set)' },
  { 'out', 'runs/covid19', 'output folder' },
}
for _, o in ipairs(require 'recipes.options') do spec[#spec + 1] = o end

local opts = fv.cli.parse(arg, spec, {
  usage = 'usage: luajit recipes/covid19.lua [options]',
  about = 'Trains and evaluates the dual-branch classifier on the COVID-19 Radiography Database.',
})
job.run(opts, {
  name = 'covid19',
  dataset = function(o)
    if o.data == '' then return nil end
    return fv.data.datasets.COVID19(o.data)
  end,
  defaults = job.DEFAULTS,
})
