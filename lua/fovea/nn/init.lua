--[[ fovea.nn: modules, layers and losses in the style of torch.nn (names, defaults,
initialisation, state_dict keys and repr match PyTorch 2.x), on top of fovea.functional.

  local nn = require 'fovea.nn'      -- also fv.nn
  local Net = nn.Module:extend('Net')
  function Net:init()
    self.features = nn.Sequential(nn.Conv2d(3, 16, 3, {padding = 1, bias = false}),
                                  nn.BatchNorm2d(16), nn.ReLU(true), nn.MaxPool2d(2))
    self.fc = nn.Linear(16, 10)
  end
  function Net:forward(x) return self.fc(nn.functional.global_avg_pool(self.features(x))) end
  local net = Net()                  -- net(x), net:parameters(), net:state_dict(), print(net)

The files, each with its own header listing its classes, options and defaults:
  nn/module.lua       nn.Module (class mechanism, registration, parameters, train/evaluate,
                      zero_grad, to/float/double, state_dict/load_state_dict, save/load,
                      tostring, error paths), nn.Parameter, nn.is_module, nn.set_error_paths
  nn/containers.lua   nn.Sequential, nn.ModuleList (children named "0", "1", ...)
  nn/layers.lua       nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity,
                      nn.Flatten, nn.Dropout
  nn/activations.lua  nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LogSoftmax
  nn/pooling.lua      nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                      nn.GlobalAvgPool, nn.Upsample, nn.Interpolate, nn.ChannelShuffle
  nn/loss.lua         nn.CrossEntropyLoss, nn.MSELoss
  nn/initialization.lua   nn.init: uniform_, normal_, constant_, zeros_, ones_,
                      xavier_uniform_, xavier_normal_, kaiming_uniform_, kaiming_normal_,
                      calculate_gain, calculate_fan_in_and_fan_out
  nn.functional is fovea.functional (F).
Dimensions count from 1 as everywhere in fovea (Softmax(2), Flatten(2)); classes of
cross-entropy targets are 1-based.
]]
local M = require 'fovea.nn.module'

local nn = {
  Module = M.Module,
  Parameter = M.Parameter,
  is_module = M.is_module,
  set_error_paths = M.set_error_paths,
  init = require 'fovea.nn.initialization',
  functional = require 'fovea.functional',
}

for _, file in ipairs { 'containers', 'layers', 'activations', 'pooling', 'loss' } do
  for name, cls in pairs(require('fovea.nn.' .. file)) do
    assert(nn[name] == nil, 'fovea.nn: ' .. name .. ' is defined twice')
    nn[name] = cls
  end
end

return nn
