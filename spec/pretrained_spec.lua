-- pretrained_spec.lua: torchvision weights in fovea. PyTorch builds torchvision's
-- resnet18, shufflenet_v2_x1_0 and shufflenet_v2_x0_5 with random weights and random
-- BatchNorm statistics (so that evaluation mode is a real test), saves them with
-- torch.save and computes their eval-mode logits on one input; tools/convert_torchvision.py
-- converts the checkpoints; fovea loads them into models/resnet.lua and
-- models/shufflenetv2.lua with strict = true and must give the same logits (max abs
-- difference below 1e-3 of the largest logit). Also: the converter refuses a missing
-- file, files that are not checkpoints, and (with --arch) another architecture's weights.
-- Needs Debian's /usr/bin/python3 with torch and torchvision (apt-get install
-- python3-torch python3-torchvision); without them the cases that need them are pending.
-- FOVEA_SPEC_VERBOSE=1 prints the measured differences to stderr.
local helpers = require 'spec.helpers'
local write = helpers.write
package.path = './?.lua;./?/init.lua;' .. package.path
local fv = require 'fovea'

local CONVERTER = 'tools/convert_torchvision.py'
local TOLERANCE = 1e-3 -- of max |logit|
local NBT = 12345      -- num_batches_tracked given to every BatchNorm (an int64 check)

local function succeeded(status) return status == 0 or status == true end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs a shell command; returns ok, output (stdout and stderr). LD_PRELOAD (make
-- sanitize's ASan runtime) is for LuaJIT, not for Python.
local function run(cmd)
  local p = io.popen('env -u LD_PRELOAD ' .. cmd .. ' 2>&1; echo "exit:$?"')
  local out = p:read('*a')
  p:close()
  local code = tonumber(out:match('exit:(%d+)%s*$'))
  return code == 0, out:gsub('exit:%d+%s*$', ''), code
end

-- Which Python there is, and whether it has torch and torchvision; cached.
local probe
local function python()
  if probe then return probe end
  probe = {}
  for _, py in ipairs { '/usr/bin/python3', 'python3' } do
    if succeeded(os.execute('env -u LD_PRELOAD ' .. py .. ' -c "import sys" >/dev/null 2>&1')) then
      probe.py = py
      break
    end
  end
  if probe.py then
    -- find_spec does not import (importing torch takes seconds); a broken install
    -- then fails the specs instead of skipping them
    local _, out = run(probe.py .. [[ -c "import importlib.util as u; print(*(u.find_spec(m) is not None for m in ('torch', 'torchvision')))"]])
    probe.torch = out:match('^(%a+)') == 'True'
    probe.torchvision = probe.torch and out:match('^%a+ (%a+)') == 'True'
  end
  return probe
end

local NO_PYTHON = 'no python3 (/usr/bin/python3): install Debian python3'
local NO_TORCH = 'Python cannot import torch: apt-get install python3-torch'
local NO_TORCHVISION = 'Python cannot import torchvision: apt-get install python3-torchvision'

-- The reason to skip, or nil when Python has what `need` ('python', 'torch',
-- 'torchvision') names.
local function missing(need)
  local p = python()
  if not p.py then return NO_PYTHON end
  if need ~= 'python' and not p.torch then return NO_TORCH end
  if need == 'torchvision' and not p.torchvision then return NO_TORCHVISION end
end

local dir
setup(function()
  dir = os.tmpname()
  os.remove(dir)
  assert(succeeded(os.execute('mkdir -p ' .. q(dir))))
end)

teardown(function()
  if dir and dir:match('^/tmp/') then os.execute('rm -rf ' .. q(dir)) end
end)

local function tmp(name) return dir .. '/' .. name end

local function convert(args)
  return run(python().py .. ' ' .. CONVERTER .. ' ' .. args)
end

---------------------------------------------------------------------------------------
-- The PyTorch side: checkpoints, the input and torch's logits, written once.

local MAKE_REFERENCE = [==[
import os, sys
import torch, torchvision
sys.path.insert(0, os.path.join(os.getcwd(), "tools"))
from convert_torchvision import write_safetensors

out, nbt = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)   # tiny models: threads only add start-up and contention
torch.manual_seed(20240607)
x = torch.randn(2, 3, 97, 75)   # odd and not square: padding, floor division, H/W order
ref = {"input": x}
# (arch, how it is saved: the state_dict or the whole pickled model)
for i, (arch, whole) in enumerate([("resnet18", False), ("shufflenet_v2_x1_0", False),
                                   ("shufflenet_v2_x0_5", True)]):
    torch.manual_seed(1000 + i)
    m = getattr(torchvision.models, arch)(weights=None)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0.0, 0.2)
                mod.running_mean.normal_(0.0, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.num_batches_tracked.fill_(nbt)
        m.fc.bias.normal_(0.0, 0.1)
    m.eval()
    with torch.no_grad():
        ref[arch] = m(x)
    torch.save(m if whole else m.state_dict(), os.path.join(out, arch + ".pth"))
write_safetensors(os.path.join(out, "reference.safetensors"), ref)
torch.save([1, 2, 3], os.path.join(out, "list.pth"))   # a checkpoint of something else
print("reference written")
]==]

local reference
local function make_reference()
  if reference then return reference end
  local script = tmp('make_reference.py')
  write(script, MAKE_REFERENCE)
  local ok, out = run(('%s %s %s %d'):format(python().py, q(script), q(dir), NBT))
  assert(ok, 'the PyTorch side failed:\n' .. out)
  reference = fv.load(tmp('reference.safetensors'))
  return reference
end

local cases = {
  { arch = 'resnet18', about = 'ResNet18 from a state_dict',
    build = function() return require('models.resnet').resnet18 { classes = 1000 } end },
  { arch = 'shufflenet_v2_x1_0', about = 'ShuffleNetV2 x1.0 from a state_dict, through --arch --pretrained-from',
    args = '--arch shufflenet_v2_x1_0 --pretrained-from %s %s',
    build = function() return require('models.shufflenetv2').shufflenet_v2 { width = 1.0, classes = 1000 } end },
  { arch = 'shufflenet_v2_x0_5', about = 'ShuffleNetV2 x0.5 from a whole pickled model',
    build = function() return require('models.shufflenetv2').shufflenet_v2 { width = 0.5, classes = 1000 } end },
}

describe('torchvision checkpoints in fovea', function()
  for _, case in ipairs(cases) do
    it(case.about .. ': converted, loaded strictly, same eval-mode logits as PyTorch', function()
      local why = missing('torchvision')
      if why then pending(why); return end
      local ref = make_reference()
      local src, dst = tmp(case.arch .. '.pth'), tmp(case.arch .. '.safetensors')
      local ok, out = convert((case.args or '%s %s'):format(q(src), q(dst)))
      assert(ok, 'the converter failed:\n' .. out)

      local net = case.build()
      local tensors, params = out:match('(%d+) tensors .-, (%d+) parameters')
      assert(tensors, 'no summary line in:\n' .. out)
      assert.are.equal(#net:state_dict_keys(), tonumber(tensors))
      assert.are.equal(net:num_parameters(), tonumber(params))

      local sd = fv.load(dst)
      local nbt = sd['conv5.1.num_batches_tracked'] or sd['bn1.num_batches_tracked']
      assert.are.equal('int64', nbt:dtype())
      assert.are.equal(0, nbt:dim())
      assert.are.equal(NBT, tonumber(nbt:item()))
      assert.are.equal('float32', sd['fc.weight']:dtype())
      local result = net:load_state_dict(sd, { strict = true })
      assert.are.same({}, result.missing_keys)
      assert.are.same({}, result.unexpected_keys)

      net:eval()
      local y = fv.no_grad(function() return net(ref.input) end)
      local want = ref[case.arch]
      assert.are.same(want:size(), y:size())
      local diff = (y - want):abs():max():item()
      local scale = want:abs():max():item()
      if os.getenv('FOVEA_SPEC_VERBOSE') then
        io.stderr:write(('\n%s: max |logit| %.6g, max |fovea - torch| %.3g (%.3g of the scale)\n')
          :format(case.arch, scale, diff, diff / scale))
      end
      assert.is_true(scale > 0.1, 'degenerate logits: max |logit| ' .. scale)
      assert.is_true(diff < TOLERANCE * scale, ('%s: max |fovea - torch| = %.6g, max |logit| = %.6g (tolerance %.3g)')
        :format(case.arch, diff, scale, TOLERANCE * scale))
    end)
  end
end)

describe('tools/convert_torchvision.py', function()
  it('refuses a missing file', function()
    local why = missing('python')
    if why then pending(why); return end
    local ok, out, code = convert(q(tmp('no_such.pth')) .. ' ' .. q(tmp('x.safetensors')))
    assert.is_false(ok)
    assert.are.equal(1, code)
    assert.truthy(out:find('no_such.pth: no such file', 1, true), out)
    assert.is_nil(io.open(tmp('x.safetensors')))
  end)

  it('refuses a file that is not a checkpoint', function()
    local why = missing('torch')
    if why then pending(why); return end
    write(tmp('notes.pth'), 'these are not weights\n')
    local ok, out, code = convert(q(tmp('notes.pth')) .. ' ' .. q(tmp('x.safetensors')))
    assert.is_false(ok)
    assert.are.equal(1, code)
    assert.truthy(out:find('notes.pth: not a PyTorch checkpoint', 1, true), out)
    assert.falsy(out:find('Traceback', 1, true), out)
    assert.is_nil(io.open(tmp('x.safetensors')))
  end)

  it('refuses a checkpoint of something other than weights (torch.save of a list)', function()
    local why = missing('torchvision') -- list.pth comes with the reference files
    if why then pending(why); return end
    make_reference()
    local ok, out, code = convert(q(tmp('list.pth')) .. ' ' .. q(tmp('x.safetensors')))
    assert.is_false(ok)
    assert.are.equal(1, code)
    assert.truthy(out:find('unexpected format: torch.load gave a list', 1, true), out)
    assert.falsy(out:find('Traceback', 1, true), out)
    assert.is_nil(io.open(tmp('x.safetensors')))
  end)

  it("refuses another architecture's weights with --arch", function()
    local why = missing('torchvision')
    if why then pending(why); return end
    make_reference()
    local ok, out, code = convert('--arch shufflenet_v2_x1_0 ' .. q(tmp('resnet18.pth')) .. ' ' .. q(tmp('x.safetensors')))
    assert.is_false(ok)
    assert.are.equal(1, code)
    assert.truthy(out:find('not a torchvision shufflenet_v2_x1_0 checkpoint: missing', 1, true), out)
    assert.truthy(out:find('shape mismatch fc.weight (1000, 512) (model (1000, 1024))', 1, true), out)
  end)
end)
