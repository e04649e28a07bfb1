-- loader.lua: batches of transformed images (fv.data.Loader).
--
--   local loader = fv.data.Loader(ds, {batch_size = 4, shuffle = true, workers = 2,
--                                      transform = fv.data.transforms.paper_train(386), seed = 1})
--   for epoch = 1, 10 do
--     for images, labels, indices in loader:epoch(epoch) do
--       -- images float32 (B, 3, 386, 386), labels int64 (B) from 1, indices {i1, ...}
--     end
--   end
--   loader:close()   -- or let the garbage collector do it
--
-- A data set of image files (:path(i), :decode_steps(); fv.data.datasets' own, their
-- subsets, or a plain list of files) with a transform whose every step has a C form
-- runs in C (core/loader.c): `workers` threads decode and transform samples ahead of
-- the training loop, at most `prefetch` batches ahead. Anything else (images made by
-- Lua code, a T.Lambda in the pipeline, workers = 0) runs in Lua with the same
-- transforms: both paths give the same batches. Random augmentation depends on (seed,
-- epoch, dataset index) only, so a seed gives the same batches with any number of
-- workers. The order of an epoch is a Philox shuffle of (seed, epoch) when shuffle is
-- on (the default).
--
-- opts.cache_dir: the leading resize and CLAHE steps' results are kept there as PNG
-- files (named by a hash of the path, file size and time, and the steps' parameters),
-- so later epochs skip decoding the originals. A failure in a worker (a missing or
-- corrupt file) is raised from the iterator naming the file and ends the epoch.
--
-- opts.pin_memory (default false): batches (images and labels) come in page-locked
-- ("pinned") host memory, so that moving them to the GPU (images:cuda(), train.fit) is an
-- asynchronous copy that overlaps the GPU's work instead of a synchronous one (PyTorch's
-- pin_memory). Needs CUDA (raises at creation otherwise); use it when training on a
-- GPU: the recipes turn it on with --device cuda. The C path allocates the batches
-- pinned (fv_loader_pin_memory), the Lua path pins each stacked batch (:pin_memory()).
-- A pinned batch whose upload is still in flight is never reused by the loader.
--
-- Options: batch_size (4), shuffle (true), workers (2), prefetch (max(2, 2 * workers)),
-- transform, seed (1), drop_last (false), cache_dir (none), pin_memory (false).
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local tensor = require 'fovea.tensor'
local T = require 'fovea.data.transforms'
local datasets = require 'fovea.data.datasets'
local fs = require 'fovea.data.fs'

local C, check, raise = clib.C, clib.check, clib.raise
local M = {}

local Loader = {}
Loader.__index = Loader
M.Loader_methods = Loader

local SHUFFLE_STREAM = 0xFFFFFFFF -- the sample index reserved for the epoch's shuffle

local function positive_int(name, v)
  if type(v) ~= 'number' or v ~= math.floor(v) or v < 1 then
    raise(('fovea: Loader: %s must be a positive integer, got %s'):format(name, tostring(v)))
  end
  return v
end

function M.Loader(source, opts)
  opts = opts or {}
  if type(source) ~= 'table' then raise('fovea: Loader: expected a data set or a list of files') end
  local dataset = source
  if not source.size then dataset = datasets.Files(source) end
  local workers = opts.workers == nil and 2 or opts.workers
  if type(workers) ~= 'number' or workers < 0 or workers ~= math.floor(workers) then
    raise('fovea: Loader: workers must be 0 or more')
  end
  local self = setmetatable({
    dataset = dataset,
    transform = T.as_compose(opts.transform),
    batch_size = positive_int('batch_size', opts.batch_size or 4),
    shuffle = opts.shuffle ~= false,
    workers = workers,
    prefetch = positive_int('prefetch', opts.prefetch or math.max(2, 2 * workers)),
    seed = opts.seed or 1,
    drop_last = opts.drop_last or false,
    cache_dir = opts.cache_dir,
    pin_memory = opts.pin_memory and true or false,
    next_epoch = 1,
  }, Loader)
  if self.pin_memory then
    local cuda = require 'fovea.cuda'
    if not cuda.available() then
      raise('fovea: Loader: pin_memory needs CUDA (pinned memory is for copies to the GPU), and CUDA is not '
        .. 'available: ' .. tostring(cuda.unavailable_reason()))
    end
  end
  local steps = self.transform:steps()
  if workers >= 1 and steps and dataset.path and dataset.decode_steps then
    self:open_c(steps)
  else
    self.mode = 'lua'
  end
  return self
end

-- The C loader over every item of the data set.
function Loader:open_c(steps)
  local ds, n = self.dataset, self.dataset:size()
  local all = {}
  for _, s in ipairs(ds:decode_steps()) do
    s.slot = -1
    all[#all + 1] = s
  end
  for _, s in ipairs(steps) do all[#all + 1] = s end
  self.paths = {} -- keeps the strings the C array points to alive
  local cpaths = ffi.new('const char*[?]', math.max(n, 1))
  local labels = ffi.new('int64_t[?]', math.max(n, 1))
  for i = 1, n do
    self.paths[i] = ds:path(i)
    cpaths[i - 1] = self.paths[i]
    labels[i - 1] = ds:label(i)
  end
  if self.cache_dir then fs.mkdirs(self.cache_dir) end
  local out = ffi.new('fv_loader*[1]')
  check(C.fv_loader_new(out, n, cpaths, labels, #all, T.c_array(all), self.batch_size, self.workers, self.prefetch,
    self.cache_dir))
  self.handle = ffi.gc(out[0], C.fv_loader_free)
  if self.pin_memory then check(C.fv_loader_pin_memory(self.handle, C.FV_CUDA)) end
  self.mode = 'c'
end

function Loader:size() return self.dataset:size() end

-- Batches per epoch.
function Loader:batches()
  local n = self.dataset:size()
  if self.drop_last then return math.floor(n / self.batch_size) end
  return math.ceil(n / self.batch_size)
end

-- The dataset indices of epoch e in order (1-based).
function Loader:order(e)
  local n = self.dataset:size()
  local order = {}
  for i = 1, n do order[i] = i end
  if self.shuffle then
    for i = n, 2, -1 do -- Fisher-Yates
      local j = 1 + math.floor(C.fv_data_uniform(self.seed, e, SHUFFLE_STREAM, n - i) * i)
      order[i], order[j] = order[j], order[i]
    end
  end
  if self.drop_last then
    for i = #order, math.floor(n / self.batch_size) * self.batch_size + 1, -1 do order[i] = nil end
  end
  return order
end

local o1, o2, o3 = ffi.new('fv_tensor*[1]'), ffi.new('fv_tensor*[1]'), ffi.new('fv_tensor*[1]')

local function c_epoch(self, e, order)
  if not self.handle then raise('fovea: Loader: the loader is closed') end
  local n = #order
  local arr = ffi.new('int64_t[?]', math.max(n, 1))
  for k = 1, n do arr[k - 1] = order[k] - 1 end
  check(C.fv_loader_start(self.handle, n, arr, self.seed, e))
  local handle = self.handle
  return function()
    if self.handle ~= handle then raise('fovea: Loader: the loader was closed during the epoch') end
    check(C.fv_loader_next(handle, o1, o2, o3))
    if o1[0] == nil then return nil end
    local images, labels, ind = tensor.wrap(o1[0]), tensor.wrap(o2[0]), tensor.wrap(o3[0])
    local p = ffi.cast('int64_t*', ind:data_ptr())
    local indices = {}
    for k = 1, ind:numel() do indices[k] = tonumber(p[k - 1]) + 1 end
    return images, labels, indices
  end
end

-- One sample through the Lua path.
local function lua_sample(self, i, e)
  local img, label = self.dataset:get(i)
  local x = self.transform(img, { seed = self.seed, epoch = e, index = i - 1 })
  return x, label
end

local function lua_epoch(self, e, order)
  local b, B, n = 0, self.batch_size, #order
  return function()
    if b * B >= n then return nil end
    local first, count = b * B, math.min(B, n - b * B)
    b = b + 1
    local batch, labels, indices, shape = nil, {}, {}, nil
    for k = 1, count do
      local i = order[first + k]
      local x, label = lua_sample(self, i, e)
      if not tensor.is_tensor(x) then raise('fovea: Loader: the transform of item ' .. i .. ' gave no tensor') end
      if not batch then
        shape = x:shape_string()
        local dims = x:size()
        table.insert(dims, 1, count)
        batch = tensor.empty(dims, { dtype = x:dtype() })
      elseif x:shape_string() ~= shape or x:dtype() ~= batch:dtype() then
        raise(('fovea: Loader: item %d gives a %s %s sample but the batch holds %s %s samples '
          .. '(resize every image to one size)'):format(i, x:dtype(), x:shape_string(), batch:dtype(), shape))
      end
      batch:select(1, k):copy_(x)
      labels[k], indices[k] = label, i
    end
    local label_t = tensor.tensor(labels, { dtype = 'int64' })
    if self.pin_memory then return batch:pin_memory(), label_t:pin_memory(), indices end
    return batch, label_t, indices
  end
end

-- An iterator over the batches of epoch e (default: the one after the last started):
-- for images, labels, indices in loader:epoch(e) do ... end. Starting an epoch ends
-- the one before, finished or not.
function Loader:epoch(e)
  e = e or self.next_epoch
  if type(e) ~= 'number' or e < 0 or e ~= math.floor(e) then raise('fovea: Loader: epoch must be an integer >= 0') end
  self.next_epoch = e + 1
  local order = self:order(e)
  if self.mode == 'c' then return c_epoch(self, e, order) end
  return lua_epoch(self, e, order)
end

-- Cached images read and written (C path with cache_dir).
function Loader:cache_stats()
  if not self.handle then return 0, 0 end
  return tonumber(C.fv_loader_cache_hits(self.handle)), tonumber(C.fv_loader_cache_writes(self.handle))
end

-- Stops and joins the worker threads now (the garbage collector does it otherwise).
function Loader:close()
  if self.handle then
    local h = self.handle
    self.handle = nil
    ffi.gc(h, nil)
    C.fv_loader_free(h)
  end
end

function Loader:__tostring()
  return ('fovea.data.Loader: %d items, batch %d, %s path%s%s'):format(self.dataset:size(), self.batch_size, self.mode,
    self.mode == 'c' and (', ' .. self.workers .. ' workers') or '', self.pin_memory and ', pinned' or '')
end

return M
