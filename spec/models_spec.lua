-- models_spec.lua: the backbones' encoder sizes at 386x386 and torchvision's parameter
-- names and counts; the dual-branch model for every variant, backbone and nam_at; the
-- attention baselines; the registry.
local fv = require 'fovea'
local models = require 'models'
local resnet = require 'models.resnet'
local shufflenet = require 'models.shufflenetv2'

local function sizes(t) return table.concat(t:size(), 'x') end

describe('backbones', function()
  local x386 = fv.randn({1, 3, 386, 386}, {seed = 1})

  it('ResNet18 encoders at 386: 64x97x97, 128x49x49, 256x25x25, 512x13x13', function()
    fv.manual_seed(1)
    local f = fv.no_grad(function() return resnet.resnet18({classes = 2}):features(x386) end)
    assert.are.equal('1x64x193x193', sizes(f.stem))
    assert.are.equal('1x64x97x97', sizes(f.e1))
    assert.are.equal('1x128x49x49', sizes(f.e2))
    assert.are.equal('1x256x25x25', sizes(f.e3))
    assert.are.equal('1x512x13x13', sizes(f.e4))
  end)

  it('ShuffleNetV2 encoders at 386: 24x97x97, 116x49x49, 232x25x25, 464x13x13', function()
    local f = fv.no_grad(function() return shufflenet.shufflenet_v2({classes = 2}):features(x386) end)
    assert.are.equal('1x24x97x97', sizes(f.e1))
    assert.are.equal('1x116x49x49', sizes(f.e2))
    assert.are.equal('1x232x25x25', sizes(f.e3))
    assert.are.equal('1x464x13x13', sizes(f.e4))
  end)

  it('has torchvision parameter names and counts', function()
    local net = resnet.resnet18()
    assert.are.equal(11689512, net:num_parameters())
    local sd = net:state_dict()
    for _, name in ipairs {'conv1.weight', 'bn1.running_mean', 'bn1.num_batches_tracked', 'layer1.0.conv1.weight',
      'layer2.0.downsample.0.weight', 'layer2.0.downsample.1.running_var', 'layer4.1.bn2.bias', 'fc.weight'} do
      assert.is_not_nil(sd[name], name)
    end
    assert.are.equal(122, #net:state_dict_keys())
    local s = shufflenet.shufflenet_v2()
    assert.are.equal(2278604, s:num_parameters())
    local ssd = s:state_dict()
    for _, name in ipairs {'conv1.0.weight', 'stage2.0.branch1.0.weight', 'stage2.1.branch2.3.weight',
      'stage4.3.branch2.6.running_mean', 'conv5.1.weight', 'fc.bias'} do
      assert.is_not_nil(ssd[name], name)
    end
  end)
end)

describe('dual-branch model', function()
  local x = fv.randn({2, 3, 64, 64}, {seed = 2})
  for _, backbone in ipairs {'resnet18', 'shufflenetv2'} do
    for _, variant in ipairs {'baseline', 'nam', 'nam+db', 'nam+db+nvcf'} do
      local placements = variant == 'baseline' and {1} or {0, 1, 2, 3, 4}
      for _, nam_at in ipairs(placements) do
        it(('%s, %s, nam_at %d gives B x classes logits'):format(backbone, variant, nam_at), function()
          local net = models.build {name = 'dual', backbone = backbone, variant = variant, nam_at = nam_at, classes = 3}
          local out = fv.no_grad(function() return net(x) end)
          assert.are.same({2, 3}, out:size())
        end)
      end
    end
  end

  it('trains end to end: every parameter of the full model gets a gradient', function()
    local net = models.build {name = 'dual', classes = 2, backbone = 'resnet18'}
    local loss = fv.F.cross_entropy(net(x), {1, 2})
    loss:backward()
    for _, entry in ipairs(net:named_parameters()) do
      assert.is_not_nil(entry[2].grad, entry[1] .. ' has no gradient')
    end
  end)

  it('rejects unknown options', function()
    assert.has_error(function() models.build {name = 'dual', variant = 'nam+xyz'} end)
    assert.has_error(function() models.build {name = 'dual', nam_at = 5} end)
    assert.has_error(function() models.build {name = 'dual', backbone = 'vgg'} end)
    assert.has_error(function() models.build {name = 'nope'} end)
  end)
end)

describe('NAM and NVCF modules', function()
  local nonlocal = require 'models.nonlocal'

  it('gradcheck: NVCF (adaptive average, adaptive max, bilinear, concatenated)', function()
    local z = fv.randn({2, 3, 9, 7}, {seed = 5, dtype = 'float64'}):detach()
    z.requires_grad = true
    local nvcf = nonlocal.NVCF()
    assert.is_true(fv.gradcheck(function(x) return nvcf(x, {4, 3}) end, {z}))
    assert.are.same({2, 9, 4, 3}, nvcf(z, {4, 3}):size())
  end)

  it('gradcheck: NAM with its 1x1 convolutions, fused and plain paths agreeing', function()
    fv.manual_seed(6)
    local fused = nonlocal.NAM(4):double()
    local plain = nonlocal.NAM(4, {fused = false}):double()
    plain:load_state_dict(fused:state_dict())
    local x = fv.randn({1, 4, 5, 3}, {seed = 7, dtype = 'float64'}):detach()
    x.requires_grad = true
    assert.is_true(fv.gradcheck(function(a) return fused(a) end, {x}))
    local a, b = fused(x), plain(x)
    assert.is_true((a - b):abs():max():item() < 1e-10)
  end)
end)

describe('attention baselines', function()
  local x = fv.randn({2, 3, 64, 64}, {seed = 3})
  for _, kind in ipairs {'se', 'cbam', 'nonlocal', 'ccnet'} do
    it(kind .. ' in ResNet18 gives logits and gradients', function()
      local net = models.build {name = kind, classes = 2}
      local out = net(x)
      assert.are.same({2, 2}, out:size())
      fv.F.cross_entropy(out, {1, 2}):backward()
      assert.is_not_nil(net.backbone.conv1.weight.grad)
    end)
  end

  it('starts the Non-local block and CCNet as the identity', function()
    local attention = require 'models.attention'
    local y = fv.randn({1, 16, 5, 6}, {seed = 4})
    local nl = attention.NonLocalBlock(16)
    nl:evaluate()
    assert.is_true((fv.no_grad(function() return nl(y) end) - y):abs():max():item() < 1e-6)
    local cc = attention.CrissCross(16)
    assert.is_true((fv.no_grad(function() return cc(y) end) - y):abs():max():item() < 1e-6)
  end)
end)

describe('registry', function()
  it('lists every model', function()
    local names = {}
    for _, e in ipairs(models.list()) do names[#names + 1] = e.name end
    assert.are.same({'cbam', 'ccnet', 'dual', 'nonlocal', 'resnet18', 'se', 'shufflenetv2'}, names)
  end)
end)
