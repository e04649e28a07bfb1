-- nn_modules_spec.lua: fovea.nn: the class mechanism and registration order, parameter
-- counts and names, PyTorch's initialisation, Sequential's 0-based names, state_dict
-- round trips and strict errors, train/evaluate, zero_grad, dtype conversion, the repr
-- tree, error paths, a float64 gradcheck through modules, and a small CNN that learns a
-- synthetic task with optim.Adam.
local fv = require 'fovea'
local nn = require 'fovea.nn'
local F = require 'fovea.functional'

local function close(a, b, tol, what)
  assert(math.abs(a - b) <= (tol or 1e-6) * math.max(1, math.abs(b)),
    ('%s%.9g vs %.9g'):format(what and what .. ': ' or '', a, b))
end

local function names_of(pairs_list)
  local out = {}
  for i, np in ipairs(pairs_list) do out[i] = np[1] end
  return out
end

local function max_abs_diff(a, b) return (a - b):abs():max():item() end

-- conv-bn-relu, a Sequential block and a head: the shape of torchvision's models
local Block = nn.Module:extend('Block')
function Block:init(cin, cout)
  self.conv1 = nn.Conv2d(cin, cout, 3, {padding = 1, bias = false})
  self.bn1 = nn.BatchNorm2d(cout)
  self.relu = nn.ReLU(true)
end
function Block:forward(x) return self.relu(self.bn1(self.conv1(x))) end

local Net = nn.Module:extend('Net')
function Net:init(classes)
  self.conv1 = nn.Conv2d(3, 4, 3, {stride = 2, padding = 1, bias = false})
  self.bn1 = nn.BatchNorm2d(4)
  self.layer1 = nn.Sequential(Block(4, 4), Block(4, 6))
  self.pool = nn.AdaptiveAvgPool2d(1)
  self.fc = nn.Linear(6, classes or 3)
end
function Net:forward(x)
  x = self.layer1(self.bn1(self.conv1(x)):relu())
  return self.fc(self.pool(x):view(x:size(1), -1))
end

describe('nn.Module classes', function()
  it('makes classes with constructors, callable instances and inheritance', function()
    local Scale = nn.Module:extend('Scale')
    function Scale:init(k) self.k = k end
    function Scale:forward(x) return x * self.k end
    local Twice = Scale:extend('Twice')
    function Twice:init() Scale.init(self, 2) end
    function Twice:forward(x) return Scale.forward(self, x) + 1 end
    local s, t = Scale(3), Twice()
    assert.are.same({3, 6}, s(fv.tensor({1, 2})):totable())
    assert.are.same({3, 6}, s:forward(fv.tensor({1, 2})):totable())
    assert.are.same({3, 5}, t(fv.tensor({1, 2})):totable())
    assert.are.equal('Twice', t.__name)
    assert.is_true(nn.is_module(t))
    assert.is_false(nn.is_module(Twice))
    assert.is_false(nn.is_module({}))
    assert.are.equal('Twice()', tostring(t))
    local ok, err = pcall(function() return nn.Module()(fv.zeros(1)) end)
    assert.is_false(ok)
    assert.matches('forward is not implemented', err)
  end)

  it('registers children, parameters and buffers in assignment order', function()
    local M = nn.Module:extend('M')
    function M:init()
      self.b = nn.Linear(2, 2)
      self:register_parameter('alpha', fv.ones(1))
      self.a = nn.Linear(2, 1, {bias = false})
      self.beta = nn.Parameter(fv.zeros(2))
      self:register_buffer('count', fv.zeros(1))
      self:register_buffer('scratch', fv.zeros(1), {persistent = false})
      self.note = 'plain field'
      self.plain = fv.zeros(3) -- a plain tensor field is not registered
    end
    local m = M()
    assert.are.same({'alpha', 'beta', 'b.weight', 'b.bias', 'a.weight'}, names_of(m:named_parameters()))
    assert.are.same({'count', 'scratch'}, names_of(m:named_buffers()))
    assert.are.same({'b', 'a'}, names_of(m:named_children()))
    local order = m:state_dict_keys()
    assert.are.same({'alpha', 'beta', 'count', 'b.weight', 'b.bias', 'a.weight'}, order)
    assert.is_true(m.alpha.requires_grad and m.beta.requires_grad)
    assert.is_false(m.count.requires_grad)
    -- reassignment keeps the position; nil keeps the name without a value
    local old_b = m.b
    m.b = nn.Linear(2, 5)
    assert.are_not.equal(old_b, m.b)
    assert.are.same({'b', 'a'}, names_of(m:named_children()))
    m.b = nil
    assert.is_nil(m.b)
    assert.are.same({'a'}, names_of(m:named_children()))
    m.b = nn.Identity()
    assert.are.same({'b', 'a'}, names_of(m:named_children()))
    m.alpha = fv.full({1}, 2)
    assert.are.equal(2, m.alpha:item())
    assert.is_true(m.alpha.requires_grad)
    assert.are.equal('alpha', m:named_parameters()[1][1])
    -- mistakes
    local ok, err = pcall(function() m.alpha = nn.ReLU() end)
    assert.matches('cannot assign a module to alpha', err)
    ok, err = pcall(function() m.a = 3 end)
    assert.matches('a is a child module', err)
    ok, err = pcall(function() m:register_parameter('note', fv.zeros(1)) end)
    assert.matches('already an ordinary field', err)
    ok, err = pcall(function() m:register_parameter('x.y', fv.zeros(1)) end)
    assert.matches('without dots', err)
    ok, err = pcall(function() m:register_parameter('i', fv.zeros({1}, {dtype = 'int64'})) end)
    assert.matches('must be a float tensor', err)
    ok, err = pcall(function() m:register_buffer('count', 5) end)
    assert.matches('must be a tensor or nil', err)
  end)

  it('deduplicates shared parameters and modules', function()
    local shared = nn.Linear(3, 3)
    local seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert.are.equal(2, #seq:parameters())
    assert.are.same({'0.weight', '0.bias'}, names_of(seq:named_parameters()))
    assert.are.equal(12, seq:num_parameters())
    local order = seq:state_dict_keys() -- torch keeps every name in the state dict
    assert.are.same({'0.weight', '0.bias', '2.weight', '2.bias'}, order)
    assert.are.equal(3, #seq:modules()) -- seq, the shared Linear once, ReLU
  end)
end)

describe('nn parameter counts and names', function()
  it('counts parameters as PyTorch', function()
    assert.are.equal(9408, nn.Conv2d(3, 64, 7, {stride = 2, padding = 3, bias = false}):num_parameters())
    assert.are.equal(9472, nn.Conv2d(3, 64, 7):num_parameters())
    assert.are.equal(64 * 9 + 64, nn.Conv2d(64, 64, 3, {groups = 64}):num_parameters())
    assert.are.equal(513000, nn.Linear(512, 1000):num_parameters())
    assert.are.equal(128, nn.BatchNorm2d(64):num_parameters())
    assert.are.equal(0, nn.BatchNorm2d(64, {affine = false}):num_parameters())
    assert.are.same({64, 1, 3, 3}, nn.Conv2d(64, 64, 3, {groups = 64}).weight:size())
  end)

  it('names nested parameters with dots and Sequential children from 0', function()
    local net = Net()
    assert.are.same({
      'conv1.weight', 'bn1.weight', 'bn1.bias',
      'layer1.0.conv1.weight', 'layer1.0.bn1.weight', 'layer1.0.bn1.bias',
      'layer1.1.conv1.weight', 'layer1.1.bn1.weight', 'layer1.1.bn1.bias',
      'fc.weight', 'fc.bias',
    }, names_of(net:named_parameters()))
    local order = net:state_dict_keys()
    assert.are.same({
      'conv1.weight', 'bn1.weight', 'bn1.bias', 'bn1.running_mean', 'bn1.running_var', 'bn1.num_batches_tracked',
      'layer1.0.conv1.weight', 'layer1.0.bn1.weight', 'layer1.0.bn1.bias', 'layer1.0.bn1.running_mean',
      'layer1.0.bn1.running_var', 'layer1.0.bn1.num_batches_tracked',
      'layer1.1.conv1.weight', 'layer1.1.bn1.weight', 'layer1.1.bn1.bias', 'layer1.1.bn1.running_mean',
      'layer1.1.bn1.running_var', 'layer1.1.bn1.num_batches_tracked',
      'fc.weight', 'fc.bias',
    }, order)
    assert.are.equal(net.layer1[2].conv1, net:get_submodule('layer1.1.conv1'))
    local ok, err = pcall(function() return net:get_submodule('layer1.2') end)
    assert.matches('no submodule layer1.2', err)
    local params = net:parameters()
    assert.are.equal(11, #params)
    assert.are.equal(net.conv1.weight.p, params[1].p)
    local mods = net:named_modules()
    assert.are.equal('', mods[1][1])
    assert.are.equal('layer1.0.conv1', mods[6][1])
    assert.are.equal('layer1.0.bn1', mods[7][1])
    assert.are.same({'conv1', 'bn1', 'layer1', 'pool', 'fc'}, names_of(net:named_children()))
  end)
end)

describe('nn initialisation', function()
  local function stats(t)
    local n = t:numel()
    local mean = t:mean():item()
    local sd = math.sqrt(((t - mean) * (t - mean)):sum():item() / (n - 1))
    return t:abs():max():item(), mean, sd
  end

  it('draws conv and linear weights and biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in))', function()
    fv.manual_seed(11)
    local conv = nn.Conv2d(64, 128, 3)
    local bound = 1 / math.sqrt(64 * 9)
    local mx, mean, sd = stats(conv.weight)
    assert.is_true(mx <= bound and mx > 0.99 * bound)
    close(mean, 0, 0.01 * bound)
    close(sd, bound / math.sqrt(3), 0.02)
    mx = stats(conv.bias)
    assert.is_true(mx <= bound and mx > 0.9 * bound)
    local grouped = nn.Conv2d(32, 32, 3, {groups = 8}) -- fan_in = 32/8 * 9
    assert.is_true(grouped.weight:abs():max():item() <= 1 / 6)
    assert.is_true(grouped.weight:abs():max():item() > 0.95 / 6)
    local lin = nn.Linear(400, 300)
    mx, mean, sd = stats(lin.weight)
    assert.is_true(mx <= 1 / 20 and mx > 0.99 / 20)
    close(sd, 1 / 20 / math.sqrt(3), 0.02)
    assert.is_true(lin.bias:abs():max():item() <= 1 / 20)
  end)

  it('initialises BatchNorm as PyTorch', function()
    local bn = nn.BatchNorm2d(5)
    assert.are.same({1, 1, 1, 1, 1}, bn.weight:totable())
    assert.are.same({0, 0, 0, 0, 0}, bn.bias:totable())
    assert.are.same({0, 0, 0, 0, 0}, bn.running_mean:totable())
    assert.are.same({1, 1, 1, 1, 1}, bn.running_var:totable())
    assert.are.equal('int64', bn.num_batches_tracked:dtype())
    assert.are.equal(0, bn.num_batches_tracked:dim())
    assert.are.equal(0, bn.num_batches_tracked:item())
    assert.are.equal(1e-5, bn.eps)
    assert.are.equal(0.1, bn.momentum)
    local plain = nn.BatchNorm1d(3, {affine = false, track_running_stats = false})
    assert.is_nil(plain.weight)
    assert.is_nil(plain.running_mean)
    assert.are.equal(0, #plain:buffers())
  end)

  it('is reproducible from fv.manual_seed', function()
    fv.manual_seed(5)
    local a = Net()
    fv.manual_seed(5)
    local b = Net()
    local c = Net()
    assert.are.equal(0, max_abs_diff(a.fc.weight, b.fc.weight))
    assert.are.equal(0, max_abs_diff(a.layer1[2].conv1.weight, b.layer1[2].conv1.weight))
    assert.is_true(max_abs_diff(a.fc.weight, c.fc.weight) > 0)
  end)

  it('provides the nn.init helpers', function()
    local init = nn.init
    local w = fv.empty(256, 64, 3, 3)
    w.requires_grad = true
    fv.manual_seed(3)
    assert.are.equal(w, init.kaiming_normal_(w, {mode = 'fan_out', nonlinearity = 'relu'}))
    assert.is_true(w.requires_grad and w:is_leaf())
    local _, mean, sd = stats(w)
    close(sd, math.sqrt(2 / (256 * 9)), 0.02)
    close(mean, 0, 0.002)
    init.kaiming_uniform_(w) -- a = 0, fan_in, leaky_relu: bound sqrt(6 / fan_in)
    local mx = stats(w)
    assert.is_true(mx <= math.sqrt(6 / 576) and mx > 0.99 * math.sqrt(6 / 576))
    local x = fv.empty(200, 300)
    init.xavier_uniform_(x, 2)
    mx = stats(x)
    local b = 2 * math.sqrt(6 / 500)
    assert.is_true(mx <= b and mx > 0.99 * b)
    init.xavier_normal_(x)
    close(select(3, stats(x)), math.sqrt(2 / 500), 0.02)
    init.normal_(x, 3, 0.5)
    close(x:mean():item(), 3, 0.01)
    init.uniform_(x, -2, -1)
    assert.is_true(x:max():item() <= -1 and x:min():item() >= -2)
    assert.are.same({7, 7}, init.constant_(fv.empty(2), 7):totable())
    assert.are.same({0, 0}, init.zeros_(fv.empty(2)):totable())
    assert.are.same({1, 1}, init.ones_(fv.empty(2)):totable())
    close(init.calculate_gain('leaky_relu', math.sqrt(5)), math.sqrt(1 / 3), 1e-12)
    close(init.calculate_gain('tanh'), 5 / 3, 1e-12)
    local fi, fo = init.calculate_fan_in_and_fan_out(fv.empty(8, 4, 3, 5))
    assert.are.same({60, 120}, {fi, fo})
    local g1, g2 = fv.generator(9), fv.generator(9)
    local u1, u2 = fv.empty(5), fv.empty(5)
    init.uniform_(u1, 0, 1, {generator = g1})
    init.uniform_(u2, 0, 1, {generator = g2})
    assert.are.same(u1:totable(), u2:totable())
    local ok, err = pcall(init.kaiming_normal_, fv.empty(5))
    assert.matches('at least 2 dimensions', err)
    ok, err = pcall(init.kaiming_normal_, fv.empty(5, 5), {mode = 'fan_inn'})
    assert.matches('mode must be fan_in or fan_out', err)
  end)
end)

describe('nn.Sequential and nn.ModuleList', function()
  it('is 1-based in Lua and 0-based in names', function()
    local a, b, c = nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)
    local seq = nn.Sequential(a, b)
    seq:add(c)
    assert.are.equal(3, #seq)
    assert.are.equal(3, seq:size())
    assert.are.equal(a, seq[1])
    assert.are.equal(c, seq:get(-1))
    assert.are.same({'0.weight', '0.bias', '2.weight', '2.bias'}, names_of(seq:named_parameters()))
    local x = fv.randn(2, 4)
    assert.are.equal(0, max_abs_diff(seq(x), c(b(a(x)))))
    local t = nn.Tanh()
    seq:insert(t, 2)
    assert.are.equal(t, seq[2])
    assert.are.same({'0', '1', '2', '3'}, names_of(seq:named_children()))
    assert.are.equal(t, seq:remove(2))
    seq[2] = nn.Sigmoid()
    assert.are.equal('Sigmoid', seq[2].__name)
    local ok, err = pcall(function() seq[7] = nn.ReLU() end)
    assert.matches('out of range', err)
    ok, err = pcall(function() seq:add(3) end)
    assert.matches('must be a module', err)
    local from_list = nn.Sequential({nn.ReLU(), nn.Tanh()})
    assert.are.equal(2, #from_list)
    local count = 0
    for i, m in ipairs(from_list) do count = count + i end
    assert.are.equal(3, count)
    assert.are.same({3}, {nn.Sequential()(3)})
  end)

  it('holds modules in a ModuleList', function()
    local ml = nn.ModuleList({nn.Linear(2, 2), nn.Linear(2, 2)})
    ml:append(nn.Linear(2, 1))
    ml:extend({nn.ReLU()})
    assert.are.equal(4, #ml)
    assert.are.same({'0.weight', '0.bias', '1.weight', '1.bias', '2.weight', '2.bias'}, names_of(ml:named_parameters()))
    local ok, err = pcall(ml, fv.zeros(2))
    assert.matches('ModuleList has no forward', err)
    local Sub = nn.ModuleList:extend('MyList') -- extend on the class still subclasses
    assert.are.equal('MyList', Sub().__name)
  end)
end)

describe('nn state_dict', function()
  local function train_a_bit(net)
    net:train()
    for i = 1, 3 do net(fv.randn({4, 3, 8, 8}, {seed = 40 + i})) end
  end

  it('round-trips into a fresh model with equal outputs', function()
    fv.manual_seed(1)
    local a = Net()
    train_a_bit(a)
    local sd, order = a:state_dict(), a:state_dict_keys()
    assert.are.equal(20, #order)
    assert.are.equal(3, sd['bn1.num_batches_tracked']:item())
    assert.are.equal('int64', sd['bn1.num_batches_tracked']:dtype())
    assert.is_false(sd['fc.weight'].requires_grad)            -- detached
    assert.are.equal(a.fc.weight:data_ptr(), sd['fc.weight']:data_ptr()) -- sharing memory
    fv.manual_seed(2)
    local b = Net()
    local x = fv.randn({2, 3, 8, 8}, {seed = 9})
    a:evaluate()
    b:evaluate()
    assert.is_true(max_abs_diff(a(x), b(x)) > 1e-3)
    local result = b:load_state_dict(sd)
    assert.are.same({}, result.missing_keys)
    assert.are.same({}, result.unexpected_keys)
    assert.are.equal(0, max_abs_diff(a(x), b(x)))
    assert.are.equal(3, b.layer1[1].bn1.num_batches_tracked:item())
    assert.is_true(b.fc.weight.requires_grad and b.fc.weight:is_leaf())
    assert.are_not.equal(a.fc.weight:data_ptr(), b.fc.weight:data_ptr()) -- copied, not shared
  end)

  it('round-trips through a safetensors file', function()
    fv.manual_seed(3)
    local a = Net()
    train_a_bit(a)
    local path = os.tmpname()
    fv.save(path, a:state_dict())
    local loaded = fv.load(path)
    local b = Net():double() -- dtypes are converted on loading
    b:load_state_dict(loaded)
    assert.are.equal('float64', b.fc.weight:dtype())
    a:evaluate()
    b:evaluate()
    local x = fv.randn({2, 3, 8, 8}, {seed = 10})
    assert.is_true(max_abs_diff(a(x):double(), b(x:double())) < 1e-5)
    -- the same through m:save and m:load
    assert.are.equal(a, a:save(path, {note = 'spec'}))
    local c = Net()
    local _, result = c:load(path)
    os.remove(path)
    assert.are.same({}, result.missing_keys)
    c:evaluate()
    assert.are.equal(0, max_abs_diff(a(x), c(x)))
  end)

  it('reports missing and unexpected keys and shape mismatches, copying nothing', function()
    fv.manual_seed(4)
    local net = Net()
    local sd = net:state_dict()
    local before = net.conv1.weight:clone()
    sd['bn1.running_mean'] = nil
    sd['fc.weight'] = nil
    sd['head.weight'] = fv.zeros(1)
    sd['conv1.weight'] = fv.zeros(4, 3, 3, 3) -- same shape: would be copied
    local ok, err = pcall(net.load_state_dict, net, sd)
    assert.is_false(ok)
    assert.matches('Error%(s%) in loading state_dict for Net', err)
    assert.matches('Missing key%(s%) in state_dict: "bn1.running_mean", "fc.weight"%.', err)
    assert.matches('Unexpected key%(s%) in state_dict: "head.weight"%.', err)
    assert.are.equal(0, max_abs_diff(net.conv1.weight, before))
    -- not strict: the rest loads, and the lists come back
    local result = net:load_state_dict(sd, {strict = false})
    assert.are.same({'bn1.running_mean', 'fc.weight'}, result.missing_keys)
    assert.are.same({'head.weight'}, result.unexpected_keys)
    assert.are.equal(0, net.conv1.weight:abs():max():item())
    -- shape mismatches are errors even when not strict
    local sd2 = net:state_dict()
    sd2['fc.weight'] = fv.zeros(5, 6)
    ok, err = pcall(net.load_state_dict, net, sd2, {strict = false})
    assert.is_false(ok)
    assert.matches('size mismatch for fc.weight: copying a param with shape 5x6 from checkpoint, the shape in current model is 3x6', err)
    ok, err = pcall(net.load_state_dict, net, sd2, {stritc = true})
    assert.matches('unknown option stritc', err)
  end)

  it('leaves non-persistent buffers out', function()
    local M = nn.Module:extend('WithScratch')
    function M:init() self:register_buffer('scratch', fv.zeros(2), {persistent = false}) end
    local m = M()
    local sd, order = m:state_dict(), m:state_dict_keys()
    assert.are.same({}, order)
    assert.is_nil(sd.scratch)
  end)
end)

describe('nn training and evaluation modes', function()
  it('switches BatchNorm between batch and running statistics', function()
    local net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.Dropout(0.5))
    local bn = net[2]
    assert.is_true(net.training and bn.training)
    local x = fv.randn({8, 2, 4, 4}, {seed = 1}) * 3 + 2
    local y = net[2](net[1](x))
    -- training: each channel of the output has mean 0 and (biased) variance 1
    local per_channel = y:transpose(1, 2):reshape(3, -1)
    for c = 1, 3 do
      close(per_channel[c]:mean():item(), 0, 1e-5)
      close(per_channel[c]:var({unbiased = false}):item(), 1, 1e-3)
    end
    assert.are.equal(1, bn.num_batches_tracked:item())
    local h = net[1](x):transpose(1, 2):reshape(3, -1)
    close(bn.running_mean:get(1), 0.1 * h[1]:mean():item(), 1e-5)
    close(bn.running_var:get(1), 0.9 + 0.1 * h[1]:var():item(), 1e-4)
    assert.are.equal(net, net:evaluate())
    assert.is_false(net.training or bn.training or net[3].training)
    local rm, rv = bn.running_mean:clone(), bn.running_var:clone()
    local ye = net(x)
    -- evaluation: running statistics, which stay as they are; dropout passes through
    local expected = F.batch_norm(net[1](x), rm, rv, bn.weight, bn.bias, {training = false})
    assert.is_true(max_abs_diff(ye, expected) < 1e-6)
    assert.are.equal(0, max_abs_diff(bn.running_mean, rm))
    assert.are.equal(1, bn.num_batches_tracked:item())
    net:train()
    assert.is_true(bn.training and net[3].training)
    net:eval()
    assert.is_false(bn.training)
    net:train(true)
    local dropped = net[3](fv.ones(1000)):eq(0):sum():item()
    assert.is_true(dropped > 400 and dropped < 600)
  end)

  it('averages cumulatively with momentum = false', function()
    local bn = nn.BatchNorm1d(1, {momentum = false})
    assert.matches('momentum=None', tostring(bn))
    bn(fv.tensor({{1}, {3}}))
    bn(fv.tensor({{5}, {7}}))
    close(bn.running_mean:item(), 4, 1e-6) -- mean of the batch means 2 and 6
  end)

  it('zero_grad drops the gradients', function()
    local net = Net()
    net(fv.randn({2, 3, 8, 8}, {seed = 2})):sum():backward()
    for _, p in ipairs(net:parameters()) do assert.is_not_nil(p.grad) end
    net:zero_grad(false)
    for _, p in ipairs(net:parameters()) do assert.are.equal(0, p.grad:abs():max():item()) end
    net:zero_grad()
    for _, p in ipairs(net:parameters()) do assert.is_nil(p.grad) end
    net:requires_grad_(false)
    assert.is_false(net.fc.weight.requires_grad)
  end)
end)

describe('nn dtype conversion', function()
  it('converts parameters and buffers in place, keeping leaves, requires_grad and sharing', function()
    local shared = nn.Linear(2, 2)
    local net = nn.Sequential(shared, nn.BatchNorm1d(2), shared)
    net(fv.randn(3, 2)):sum():backward()
    assert.are.equal(net, net:double())
    for _, p in ipairs(net:parameters()) do
      assert.are.equal('float64', p:dtype())
      assert.is_true(p.requires_grad and p:is_leaf())
      assert.are.equal('float64', p.grad:dtype())
    end
    assert.are.equal(net[1], net[3])
    assert.are.equal(net[1].weight.p, net[3].weight.p)
    assert.are.equal('float64', net[2].running_var:dtype())
    assert.are.equal('int64', net[2].num_batches_tracked:dtype())
    local y = net(fv.randn({3, 2}, {dtype = 'float64'}))
    assert.are.equal('float64', y:dtype())
    net:float()
    assert.are.equal('float32', net[1].weight:dtype())
    assert.are.equal(net, net:to('cpu'))
    local ok, err = pcall(net.to, net, 'cuda')
    assert.is_false(ok)
    assert.matches('CUDA', err)
    ok, err = pcall(net.to, net, 'int64')
    assert.matches('floating dtypes only', err)
    ok, err = pcall(net.to, net, 'tpu')
    assert.matches('unknown device', err)
    local lin = nn.Linear(2, 3, {dtype = 'float64'})
    assert.are.equal('float64', lin.weight:dtype())
  end)
end)

describe('nn repr', function()
  it('prints a tree as PyTorch does', function()
    local expected = table.concat({
      'Net(',
      '  (conv1): Conv2d(3, 4, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)',
      '  (bn1): BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)',
      '  (layer1): Sequential(',
      '    (0): Block(',
      '      (conv1): Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)',
      '      (bn1): BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)',
      '      (relu): ReLU(inplace=True)',
      '    )',
      '    (1): Block(',
      '      (conv1): Conv2d(4, 6, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)',
      '      (bn1): BatchNorm2d(6, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)',
      '      (relu): ReLU(inplace=True)',
      '    )',
      '  )',
      '  (pool): AdaptiveAvgPool2d(output_size=1)',
      '  (fc): Linear(in_features=6, out_features=3, bias=True)',
      ')',
    }, '\n')
    assert.are.equal(expected, tostring(Net()))
  end)

  it('writes each layer\'s options', function()
    local cases = {
      {nn.Conv2d(8, 16, {3, 5}, 2, {1, 2}, {dilation = 2, groups = 4}),
        'Conv2d(8, 16, kernel_size=(3, 5), stride=(2, 2), padding=(1, 2), dilation=(2, 2), groups=4)'},
      {nn.Conv2d(3, 3, 3, {padding = 'same'}), 'Conv2d(3, 3, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))'},
      {nn.MaxPool2d(3, {stride = 2, padding = 1}), 'MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)'},
      {nn.MaxPool2d({2, 2}, {ceil_mode = true}), 'MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=0, dilation=1, ceil_mode=True)'},
      {nn.AvgPool2d(2), 'AvgPool2d(kernel_size=2, stride=2, padding=0)'},
      {nn.AdaptiveMaxPool2d({7, 7}), 'AdaptiveMaxPool2d(output_size=(7, 7))'},
      {nn.BatchNorm1d(10, {eps = 1e-3, momentum = 0.01}),
        'BatchNorm1d(10, eps=0.001, momentum=0.01, affine=True, track_running_stats=True)'},
      {nn.Linear(4, 2, {bias = false}), 'Linear(in_features=4, out_features=2, bias=False)'},
      {nn.ReLU(), 'ReLU()'},
      {nn.LeakyReLU(0.2), 'LeakyReLU(negative_slope=0.2)'},
      {nn.Dropout(0.25), 'Dropout(p=0.25, inplace=False)'},
      {nn.Softmax(2), 'Softmax(dim=2)'},
      {nn.LogSoftmax(), 'LogSoftmax(dim=-1)'},
      {nn.Upsample({size = {8, 8}, align_corners = true}), "Upsample(size=(8, 8), mode='bilinear', align_corners=True)"},
      {nn.Upsample({scale_factor = 2}), "Upsample(scale_factor=2.0, mode='bilinear')"},
      {nn.ChannelShuffle(2), 'ChannelShuffle(groups=2)'},
      {nn.Flatten(), 'Flatten(start_dim=2, end_dim=-1)'},
      {nn.Identity(), 'Identity()'},
      {nn.GlobalAvgPool(), 'GlobalAvgPool()'},
      {nn.CrossEntropyLoss(), 'CrossEntropyLoss()'},
      {nn.ModuleList({nn.Tanh()}), 'ModuleList(\n  (0): Tanh()\n)'},
    }
    for _, case in ipairs(cases) do assert.are.equal(case[2], tostring(case[1])) end
  end)
end)

describe('nn errors', function()
  it('prefixes errors in children with the module path', function()
    local net = Net()
    local ok, err = pcall(net, fv.randn(2, 3, 8, 8)) -- fine
    assert.is_true(ok)
    net.layer1[2].conv1 = nn.Conv2d(5, 6, 3, {padding = 1, bias = false}) -- wrong in_channels
    ok, err = pcall(net, fv.randn(2, 3, 8, 8))
    assert.is_false(ok)
    assert.matches('^In module layer1%.1%.conv1 %(Conv2d%): .*conv2d: input 2x4x4x4 and weight 6x5x3x3 do not fit', err)
    ok, err = pcall(function() return net:forward(fv.randn(2, 3, 8, 8)) end)
    assert.matches('^In module layer1%.1%.conv1 %(Conv2d%)', err)
    -- the next call starts from a clean stack
    ok, err = pcall(net.layer1[1], fv.randn(1, 4, 5, 5))
    assert.is_true(ok)
    ok, err = pcall(net, fv.randn(2, 3, 8, 8))
    assert.matches('^In module layer1%.1%.conv1 %(Conv2d%)', err)
    -- errors in a module's own forward name that module; the root's own are bare
    local Bad = nn.Module:extend('Bad')
    function Bad:forward(x) return x + fv.zeros(7) end
    local outer = nn.Sequential(nn.ReLU(), Bad())
    ok, err = pcall(outer, fv.zeros(2, 3))
    assert.matches('^In module 1 %(Bad%): .*do not broadcast', err)
    ok, err = pcall(Bad(), fv.zeros(2, 3))
    assert.matches('^[^I].*do not broadcast', err)
    -- a forward that calls a grandchild directly gets its dotted path
    local Skip = nn.Module:extend('Skip')
    function Skip:init() self.body = nn.Sequential(nn.Linear(2, 2), nn.Linear(3, 1)) end
    function Skip:forward(x) return self.body[2](self.body[1](x)) end
    ok, err = pcall(Skip(), fv.zeros(1, 2))
    assert.matches('^In module body%.1 %(Linear%)', err)
    -- switched off: bare messages
    assert.is_true(nn.set_error_paths(false))
    ok, err = pcall(net, fv.randn(2, 3, 8, 8))
    assert.is_false(nn.set_error_paths(true))
    assert.matches('conv2d: input 2x4x4x4 and weight 6x5x3x3', err)
    assert.is_nil(err:find('In module'))
  end)

  it('checks constructor arguments', function()
    local ok, err = pcall(nn.Conv2d, 3, 8, 3, {strid = 2})
    assert.matches('Conv2d: unknown option strid', err)
    ok, err = pcall(nn.Conv2d, 3, 8, 3, {groups = 2})
    assert.matches('in_channels 3 is not divisible by groups 2', err)
    ok, err = pcall(nn.Linear, 0, 3)
    assert.matches('in_features must be a positive integer', err)
    ok, err = pcall(function() return nn.BatchNorm2d(3)(fv.zeros(2, 3)) end)
    assert.matches('BatchNorm2d: expected a 4%-D input', err)
    ok, err = pcall(nn.Upsample, {})
    assert.matches('give either size or scale_factor', err)
  end)
end)

describe('nn layers', function()
  it('compute what the functional ops compute', function()
    local x = fv.randn({2, 4, 6, 6}, {seed = 3})
    local conv = nn.Conv2d(4, 6, 3, {stride = 2, padding = 1, groups = 2})
    assert.are.equal(0, max_abs_diff(conv(x), F.conv2d(x, conv.weight, conv.bias, {stride = 2, padding = 1, groups = 2})))
    assert.are.same({2, 4, 3, 3}, nn.MaxPool2d(2)(x):size())
    assert.are.same({2, 4, 3, 3}, nn.AvgPool2d(3, 2, 1)(x):size())
    assert.are.same({2, 4, 2, 3}, nn.AdaptiveAvgPool2d({2, 3})(x):size())
    assert.are.same({2, 4}, nn.GlobalAvgPool()(x):size())
    assert.are.same({2, 144}, nn.Flatten()(x):size())
    assert.are.same({2, 4, 36}, nn.Flatten(3)(x):size())
    assert.are.same({2, 4, 12, 12}, nn.Upsample({scale_factor = 2})(x):size())
    assert.are.same({2, 4, 5, 7}, nn.Interpolate({5, 7})(x):size())
    assert.are.equal(0, max_abs_diff(nn.ChannelShuffle(2)(x), F.channel_shuffle(x, 2)))
    assert.are.equal(x, nn.Identity()(x))
    local v = fv.tensor({-2, 0.5})
    assert.are.same({-0.4000000059604645, 0.5}, nn.LeakyReLU(0.2)(v):totable())
    assert.are.same({0, 0.5}, nn.ReLU()(v):totable())
    close(nn.Sigmoid()(v):get(2), 1 / (1 + math.exp(-0.5)))
    close(nn.Tanh()(v):get(1), math.tanh(-2))
    local logits = fv.randn({3, 5}, {seed = 4})
    close(nn.Softmax(2)(logits):sum():item(), 3, 1e-5)
    assert.is_true(max_abs_diff(nn.LogSoftmax(2)(logits):exp(), nn.Softmax(2)(logits)) < 1e-6)
    local target = {1, 5, 2}
    local w = fv.tensor({1, 2, 3, 4, 5})
    close(nn.CrossEntropyLoss({weight = w})(logits, target):item(), F.cross_entropy(logits, target, {weight = w}):item())
    close(nn.CrossEntropyLoss({reduction = 'sum'})(logits, target):item(),
      F.cross_entropy(logits, target, {reduction = 'sum'}):item())
    close(nn.MSELoss()(fv.tensor({1, 2}), fv.tensor({2, 4})):item(), 2.5)
  end)
end)

describe('nn gradients', function()
  it('passes a float64 gradcheck through a module stack, parameters included', function()
    fv.manual_seed(21)
    local net = nn.Sequential(
      nn.Conv2d(2, 3, 3, {padding = 1}), nn.BatchNorm2d(3), nn.Tanh(), nn.AvgPool2d(2),
      nn.Flatten(), nn.Linear(12, 2), nn.LogSoftmax(2)):double()
    local x = fv.randn({2, 2, 4, 4}, {dtype = 'float64', seed = 22})
    x.requires_grad = true
    local inputs = {x}
    for _, p in ipairs(net:parameters()) do inputs[#inputs + 1] = p end
    assert.are.equal(7, #inputs)
    assert.is_true(fv.gradcheck(function(input) return net(input) end, inputs))
  end)
end)

describe('nn acceptance: a small CNN learns with optim.Adam', function()
  -- 16x16 noisy images with a bright 4x4 square in the left half (class 1) or the
  -- right half (class 2)
  local function make_data(n, seed)
    local g = fv.generator(seed)
    local x = fv.randn({n, 1, 16, 16}, {generator = g}) * 0.5
    local pos = fv.rand({n, 2}, {generator = g}):totable()
    local labels = {}
    for i = 1, n do
      local right = i % 2 == 0
      labels[i] = right and 2 or 1
      local r = 1 + math.floor(pos[i][1] * 13)
      local c = 1 + math.floor(pos[i][2] * 5) + (right and 8 or 0)
      local patch = x:select(1, i):narrow(2, r, 4):narrow(3, c, 4)
      patch:copy_(patch + 2)
    end
    return x, fv.tensor(labels, {dtype = 'int64'}), labels
  end

  it('drives the loss from about log 2 to below 0.2', function()
    local optim = require 'fovea.optim'
    local x, y = make_data(256, 7)
    fv.manual_seed(1)
    local SmallCNN = nn.Module:extend('SmallCNN')
    function SmallCNN:init()
      self.features = nn.Sequential(
        nn.Conv2d(1, 8, 3, {padding = 1, bias = false}), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, {padding = 1, bias = false}), nn.BatchNorm2d(16), nn.ReLU(), nn.GlobalAvgPool())
      self.fc = nn.Linear(16, 2)
    end
    function SmallCNN:forward(input) return self.fc(self.features(input)) end
    local net = SmallCNN()
    local criterion = nn.CrossEntropyLoss()
    local opt = optim.Adam(net, {lr = 1e-2})
    local batch, losses = 32, {}
    local started = os.clock()
    for step = 1, 80 do
      local s = ((step - 1) * batch) % 256 + 1
      opt:zero_grad()
      local loss = criterion(net(x:narrow(1, s, batch)), y:narrow(1, s, batch))
      loss:backward()
      opt:step()
      losses[step] = loss:item()
    end
    local elapsed = os.clock() - started
    assert.is_true(losses[1] > 0.5 and losses[1] < 0.9, 'first loss ' .. losses[1])
    local recent = 0
    for i = 71, 80 do recent = recent + losses[i] / 10 end
    assert.is_true(recent < 0.2, 'mean loss of the last 10 steps ' .. recent)
    -- held-out data in evaluation mode (running BatchNorm statistics)
    net:evaluate()
    local tx, _, tlabels = make_data(128, 8)
    local logits = fv.no_grad(function() return net(tx) end)
    local correct = 0
    for i, row in ipairs(logits:totable()) do
      local predicted = row[2] > row[1] and 2 or 1
      if predicted == tlabels[i] then correct = correct + 1 end
    end
    assert.is_true(correct / 128 > 0.9, 'held-out accuracy ' .. correct / 128)
    assert.is_true(elapsed < 30, 'took ' .. elapsed .. ' s of CPU')
  end)
end)
