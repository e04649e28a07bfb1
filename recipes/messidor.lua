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
  { 'model', 'dual', 'model name (models.list(): dual, resnet18, se, cbam, nonlocal, ccnet, ...)' },
  { 'backbone', 'resnet18', 'resnet18 or shufflenetv2 (dual model)' },
  { 'variant', 'nam+db+nvcf', 'baseline, nam, nam+db or nam+db+nvcf (dual model)' },
  { 'nam_at', 1, 'NAM placement: 0 (stem) .. 4 (e4)' },
  { 'size', 0, 'image size (0: 386 for MESSIDOR, 160 for the built-in set)' },
  { 'epochs', 0, 'training epochs (0: 30 for MESSIDOR, 12 for the built-in set)' },
  { 'batch', 0, 'batch size (0: 4 as the paper for MESSIDOR, 8 for the built-in set)' },
  { 'lr', 0, 'Adam learning rate (0: 2e-4 as the paper for MESSIDOR, 5e-4 for the built-in set)' },
  { 'repeats', 0, 'runs with different splits, reported as mean +- std (0: 5 for MESSIDOR, 1 built-in)' },
  { 'test_fraction', 0.1, 'held-out fraction of each class' },
  { 'device', 'cpu', 'cpu or cuda' },
  { 'workers', 2, 'data loader threads' },
  { 'threads', 2, 'compute threads (OpenMP and BLAS)' },
  { 'seed', 1, 'seed of splits, initialisation and augmentation' },
  { 'out', 'runs/messidor', 'output folder' },
  { 'resume', false, 'continue each run from its last checkpoint' },
  { 'pretrained', '', 'backbone weights (safetensors, torchvision names; tools/convert_torchvision.py)' },
  { 'synthetic_n', 480, 'images in the built-in set' },
  { 'gradcam', 4, 'test images to explain with Grad-CAM per run (0: none)' },
  { 'cache', '', 'cache folder for the built-in set and resized images (empty: ~/.cache/fovea)' },
}

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
  defaults = { real = { size = 386, epochs = 30, batch = 4, lr = 2e-4, repeats = 5 },
    builtin = { size = 160, epochs = 12, batch = 8, lr = 5e-4, repeats = 1 } },
})
