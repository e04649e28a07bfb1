-- splits.lua: stratified train/test splits and k folds (fv.data.splits), reproducible
-- from a seed. Each class is shuffled on its own (Philox: fv_data_uniform with the
-- seed) and cut in the requested proportion, so every part keeps the class balance.
-- Indices count from 1 and come back sorted.
--
--   local train, test = fv.data.splits.train_test(ds, {test_fraction = 0.1, seed = 1})
--   for run, s in ipairs(fv.data.splits.repeated(ds, {runs = 5})) do ... s.train, s.test ... end
--   for k, fold in ipairs(fv.data.splits.kfold(ds, {k = 5, seed = 1})) do ... end
local clib = require 'fovea.clib'

local C, raise = clib.C, clib.raise
local S = {}

local SPLIT_STREAM = 0xFFFFFFFE -- the sample index reserved for split draws

-- Class numbers from a list, or from a data set (:labels() or :label(i)).
local function labels_of(x)
  if type(x) == 'table' and x.size and x.label then
    if x.labels then return x:labels() end
    local out = {}
    for i = 1, x:size() do out[i] = x:label(i) end
    return out
  end
  if type(x) ~= 'table' then raise('fovea: splits: expected a list of labels or a data set') end
  return x
end

-- The indices of each class in a seeded random order: by_class[label] = {...}, and the
-- labels in increasing order.
local function shuffled_classes(labels, seed)
  local n = #labels
  local perm = {}
  for i = 1, n do perm[i] = i end
  for i = n, 2, -1 do -- Fisher-Yates
    local j = 1 + math.floor(C.fv_data_uniform(seed, 0, SPLIT_STREAM, n - i) * i)
    perm[i], perm[j] = perm[j], perm[i]
  end
  local by_class, keys = {}, {}
  for _, i in ipairs(perm) do
    local l = labels[i]
    if l == nil then raise('fovea: splits: label ' .. i .. ' is nil') end
    if not by_class[l] then by_class[l], keys[#keys + 1] = {}, l end
    table.insert(by_class[l], i)
  end
  table.sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) == 'number'
  end)
  return by_class, keys
end

-- Stratified split: about test_fraction (default 0.1) of each class goes to test
-- (rounded; a class keeps at least one training item). Returns train, test.
function S.train_test(labels, opts)
  opts = opts or {}
  labels = labels_of(labels)
  local f = opts.test_fraction or 0.1
  if type(f) ~= 'number' or f < 0 or f >= 1 then raise('fovea: splits: test_fraction must be in [0, 1)') end
  local by_class, keys = shuffled_classes(labels, opts.seed or 1)
  local train, test = {}, {}
  for _, l in ipairs(keys) do
    local idx = by_class[l]
    local n_test = math.floor(#idx * f + 0.5)
    if n_test >= #idx then n_test = #idx - 1 end
    for k, i in ipairs(idx) do
      if k <= n_test then test[#test + 1] = i else train[#train + 1] = i end
    end
  end
  table.sort(train)
  table.sort(test)
  return train, test
end

-- The paper's protocol: opts.runs (default 5) stratified splits with seeds seed,
-- seed + 1, ...: { {train = , test = , seed = }, ... }.
function S.repeated(labels, opts)
  opts = opts or {}
  labels = labels_of(labels)
  local out = {}
  for r = 1, opts.runs or 5 do
    local seed = (opts.seed or 1) + r - 1
    local train, test = S.train_test(labels, { test_fraction = opts.test_fraction, seed = seed })
    out[r] = { train = train, test = test, seed = seed }
  end
  return out
end

-- Stratified k folds (default 5): each class's shuffled items are dealt to the folds in
-- turn, the dealing going on across classes, so fold sizes differ by one at most.
-- Returns { {train = , test = }, ... }, fold k testing on its own items.
function S.kfold(labels, opts)
  opts = opts or {}
  labels = labels_of(labels)
  local k = opts.k or 5
  if type(k) ~= 'number' or k < 2 or k > #labels then raise('fovea: splits: k must be 2 .. the number of items') end
  local by_class, keys = shuffled_classes(labels, opts.seed or 1)
  local fold_of, next_fold = {}, 0
  for _, l in ipairs(keys) do
    for _, i in ipairs(by_class[l]) do
      fold_of[i] = next_fold % k + 1
      next_fold = next_fold + 1
    end
  end
  local folds = {}
  for f = 1, k do
    local train, test = {}, {}
    for i = 1, #labels do
      if fold_of[i] == f then test[#test + 1] = i else train[#train + 1] = i end
    end
    folds[f] = { train = train, test = test }
  end
  return folds
end

-- A data set's train and test subsets for a split {train = , test = } (or two lists).
function S.subsets(dataset, train, test)
  if type(train) == 'table' and train.train then train, test = train.train, train.test end
  return dataset:subset(train), dataset:subset(test)
end

return S
