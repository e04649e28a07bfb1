--[[ nn/loss.lua: losses as modules, called as loss(prediction, target).

  nn.CrossEntropyLoss({weight = nil, reduction = 'mean'})
      logits (B, K) and targets 1..K (an int64 tensor of size B, or a Lua array);
      weight: a tensor of K class weights (a buffer, as in PyTorch); reduction 'mean'
      (weighted mean, PyTorch's), 'sum' or 'none'
  nn.MSELoss({reduction = 'mean'})
      mean (or sum, or none: elementwise) of (prediction - target)^2; shapes broadcast
]]
local clib = require 'fovea.clib'
local T = require 'fovea.tensor'
local F = require 'fovea.functional'
local M = require 'fovea.nn.module'
local util = require 'fovea.nn.util'

local raise = clib.raise
local Module = M.Module

local loss = {}

local reductions = { mean = true, sum = true, none = true }
local function read_reduction(who, r)
  r = r or 'mean'
  if not reductions[r] then raise(('fovea: %s: reduction must be mean, sum or none, got %s'):format(who, tostring(r))) end
  return r
end

local CrossEntropyLoss = Module:extend('CrossEntropyLoss')
loss.CrossEntropyLoss = CrossEntropyLoss
function CrossEntropyLoss:init(opts)
  opts = util.check_options('CrossEntropyLoss', opts, { weight = true, reduction = true })
  if opts.weight ~= nil and not T.is_tensor(opts.weight) then raise('fovea: CrossEntropyLoss: weight must be a tensor') end
  self:register_buffer('weight', opts.weight)
  self.reduction = read_reduction('CrossEntropyLoss', opts.reduction)
end
function CrossEntropyLoss:forward(logits, target)
  return F.cross_entropy(logits, target, { weight = self.weight, reduction = self.reduction })
end

local MSELoss = Module:extend('MSELoss')
loss.MSELoss = MSELoss
function MSELoss:init(opts)
  opts = util.check_options('MSELoss', opts, { reduction = true })
  self.reduction = read_reduction('MSELoss', opts.reduction)
end
function MSELoss:forward(prediction, target)
  local d = prediction - target
  local sq = d * d
  if self.reduction == 'mean' then return sq:mean() end
  if self.reduction == 'sum' then return sq:sum() end
  return sq
end

return loss
