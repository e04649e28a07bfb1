--[[ metrics.lua: classification metrics as the paper reports them (AUC, sensitivity,
accuracy, precision; mean +- std over runs).

  local metrics = require 'fovea.metrics'          -- also fv.metrics
  local s = metrics.summary(labels, probs, {positive = 2})
  print(s.auc, s.sensitivity, s.specificity, s.accuracy, s.precision, s.f1)
  local mean, std = metrics.mean_std({0.91, 0.93, 0.92, 0.90, 0.94})
  local md, csv = metrics.format_table(rows, {'name', 'auc', 'sensitivity', 'accuracy'})

Inputs
  labels  true classes, 1-based: a Lua array of integers or a tensor (any dtype, N or
          Nx1 elements).
  scores  predicted scores (probabilities), one of
            - an (N, K) tensor or a Lua array of N rows of K numbers: K classes; the
              predicted class is the row's argmax (the first one on ties);
            - an N tensor or a Lua array of N numbers: binary, the score of the positive
              class; predicted positive when score >= opts.threshold (0.5).
  opts    positive      the positive class of a binary task (2 by default; the other
                        class is the negative one)
          threshold     for a score vector: predicted positive when score >= it (0.5)
          num_classes   K, when the scores do not say it (a vector means 2)
          average       'binary' (the default for K = 2: the positive class's values)
                        or 'macro' (the default for K > 2: the mean over classes, each
                        class one-vs-rest)
          zero_division the value a per-class metric takes when its denominator is 0
                        (default NaN: undefined; 0 gives scikit-learn's
                        zero_division = 0)

Definitions (tp, fp, fn, tn of one class against the rest)
  accuracy     (correct predictions) / N, over all classes (the paper's (tp+tn)/all for
               a binary task). summary() also gives ovr_accuracy: the mean over classes
               of the one-vs-rest (tp+tn)/N, the other reading of the paper's formula for
               a multi-class task.
  sensitivity  tp / (tp + fn)   (recall, true positive rate)
  specificity  tn / (tn + fp)
  precision    tp / (tp + fp)
  f1           2 tp / (2 tp + fp + fn)   (macro: the mean of the per-class F1, as
               scikit-learn's f1_score(average='macro'))
  auc          the area under the ROC curve, exactly, by the Mann-Whitney statistic:
               over all (positive, negative) pairs, the fraction where the positive one
               scores higher, ties counted 1/2 (computed from average ranks, O(N log N)).
               Multi-class: the one-vs-rest AUC of each class with its own column of
               scores, averaged (macro), as scikit-learn's roc_auc_score(multi_class =
               'ovr', average = 'macro').

Undefined values are NaN, never errors: a division by zero (a class never predicted
has no precision), an AUC when the labels hold one class only, or scores with NaN in
them. summary() lists why in its notes (an array of strings) and note (the same
joined with '; ', or nil when all is defined). A macro average is the mean over the
classes whose value is defined (the ones left out are named in the notes), NaN when
none is.

Functions
  metrics.confusion_matrix(labels, scores, opts)  K x K counts, rows = truth, columns =
                                                  predicted; also returns K
  metrics.confusion(labels, predicted, k)         the same from predicted classes
  metrics.predict(scores, opts)                   predicted classes (array), K
  metrics.from_confusion(cm, opts)                all the threshold metrics from counts
  metrics.accuracy / sensitivity / specificity / precision / f1(labels, scores, opts)
  metrics.auc(labels, scores, opts)               binary or one-vs-rest macro; a second
                                                  result: a note when undefined
  metrics.binary_auc(is_positive, scores)         from an array of booleans
  metrics.roc_curve(labels, scores, opts)         {fpr=, tpr=, thresholds=, auc=}
  metrics.summary(labels, scores, opts)           all of the above in one table
  metrics.mean_std(values, opts)                  mean and sample standard deviation
  metrics.format_table(rows, columns, opts)       Markdown and CSV of "mean ± std" cells
]]
local M = {}

local NaN = 0 / 0
M.NaN = NaN

local function isnan(x) return x ~= x end
M.isnan = isnan

-- Errors name the module and are blamed on the caller's line (clib.raise skips
-- fovea's own frames).
local raise = require('fovea.clib').raise
local function fail(msg) raise('fovea.metrics: ' .. msg) end

local function check_opts(opts, allowed, fn)
  if opts == nil then return {} end
  if type(opts) ~= 'table' then fail(fn .. ': options must be a table, got ' .. type(opts)) end
  for k in pairs(opts) do
    if not allowed[k] then fail(fn .. ': unknown option ' .. tostring(k)) end
  end
  return opts
end

local OPTS = { positive = true, threshold = true, num_classes = true, average = true,
  zero_division = true }

local tensor_mod
local function is_tensor(x)
  if type(x) ~= 'cdata' then return false end
  tensor_mod = tensor_mod or require 'fovea.tensor'
  return tensor_mod.is_tensor(x)
end

---------------------------------------------------------------------------------------
-- inputs

-- labels as a Lua array of integers >= 1.
local function read_labels(labels, fn)
  local list
  if is_tensor(labels) then
    local t = labels
    if t:dim() == 2 and t:size(2) == 1 then t = t:reshape(-1) end
    if t:dim() ~= 1 then
      fail(fn .. ': labels must be a vector (N or Nx1), got a tensor of ' .. t:dim() .. ' dimensions')
    end
    list = t:totable()
  elseif type(labels) == 'table' then
    list = labels
  else
    fail(fn .. ': labels must be a Lua array or a tensor, got ' .. type(labels))
  end
  local out = {}
  for i = 1, #list do
    local v = list[i]
    if type(v) ~= 'number' or v ~= math.floor(v) or v < 1 then
      fail(('%s: label %d is %s; labels are classes counted from 1'):format(fn, i, tostring(v)))
    end
    out[i] = v
  end
  return out
end

-- scores as {kind = 'vector', values = {...}} or {kind = 'rows', values = {{...}, ...}, k = K}.
local function read_scores(scores, n, fn)
  local values, kind
  if is_tensor(scores) then
    local t = scores
    if t:dim() == 2 and t:size(2) == 1 then t = t:reshape(-1) end
    if t:dim() == 1 then kind = 'vector'
    elseif t:dim() == 2 then kind = 'rows'
    else fail(fn .. ': scores must be an N vector or an (N, K) matrix, got a tensor of ' .. t:dim() .. ' dimensions') end
    values = t:totable()
  elseif type(scores) == 'table' then
    values = scores
    kind = type(values[1]) == 'table' and 'rows' or 'vector'
  else
    fail(fn .. ': scores must be a Lua array or a tensor, got ' .. type(scores))
  end
  if #values ~= n then
    fail(('%s: %d labels but %d scores'):format(fn, n, #values))
  end
  local k
  if kind == 'rows' then
    k = n > 0 and #values[1] or 0
    for i = 1, n do
      local row = values[i]
      if type(row) ~= 'table' then fail(('%s: score row %d is a %s, not a row'):format(fn, i, type(row))) end
      if #row ~= k then fail(('%s: score row %d has %d entries, row 1 has %d'):format(fn, i, #row, k)) end
      for j = 1, k do
        if type(row[j]) ~= 'number' then fail(('%s: score [%d][%d] is a %s'):format(fn, i, j, type(row[j]))) end
      end
    end
  else
    for i = 1, n do
      if type(values[i]) ~= 'number' then fail(('%s: score %d is a %s'):format(fn, i, type(values[i]))) end
    end
  end
  return { kind = kind, values = values, k = k }
end

-- Reads and checks everything; returns labels, scores, K, positive, negative (binary).
local function prepare(labels, scores, opts, fn)
  opts = check_opts(opts, OPTS, fn)
  local y = read_labels(labels, fn)
  local s = read_scores(scores, #y, fn)
  local k = opts.num_classes or (s.kind == 'rows' and s.k or 2)
  if s.kind == 'rows' and s.k ~= k then
    fail(('%s: num_classes is %d but the score rows have %d columns'):format(fn, k, s.k))
  end
  if s.kind == 'vector' and k ~= 2 then
    fail(('%s: a score vector means a binary task, but num_classes is %d'):format(fn, k))
  end
  for i = 1, #y do
    if y[i] > k then fail(('%s: label %d is %d, but there are %d classes'):format(fn, i, y[i], k)) end
  end
  local positive = opts.positive or 2
  if k == 2 and positive ~= 1 and positive ~= 2 then
    fail(fn .. ': positive must be 1 or 2 for a binary task, got ' .. tostring(positive))
  end
  local average = opts.average or (k == 2 and 'binary' or 'macro')
  if average ~= 'binary' and average ~= 'macro' then
    fail(fn .. ": average must be 'binary' or 'macro', got " .. tostring(average))
  end
  if average == 'binary' and k ~= 2 then
    fail(('%s: average = binary needs 2 classes, there are %d'):format(fn, k))
  end
  return y, s, k, positive, opts, average
end

-- The predicted class of each sample.
local function predict(s, k, positive, threshold)
  local pred = {}
  if s.kind == 'rows' then
    for i, row in ipairs(s.values) do
      local best, bj = -math.huge, 1
      for j = 1, k do
        local v = row[j]
        if v > best then best, bj = v, j end   -- NaN never wins; an all-NaN row gives 1
      end
      pred[i] = bj
    end
  else
    threshold = threshold or 0.5
    local negative = 3 - positive
    for i, v in ipairs(s.values) do pred[i] = v >= threshold and positive or negative end
  end
  return pred
end

function M.predict(scores, opts)
  opts = check_opts(opts, OPTS, 'predict')
  local n = is_tensor(scores) and scores:size(1) or #scores
  local s = read_scores(scores, n, 'predict')
  local k = s.kind == 'rows' and s.k or 2
  return predict(s, k, opts.positive or 2, opts.threshold), k
end

-- The score that ranks samples for class c: its column, or for a binary score vector
-- the score itself (positive class) or its negation (the other class).
local function class_scores(s, c, positive)
  local out = {}
  if s.kind == 'rows' then
    for i, row in ipairs(s.values) do out[i] = row[c] end
  else
    local sign = c == positive and 1 or -1
    for i, v in ipairs(s.values) do out[i] = sign * v end
  end
  return out
end

---------------------------------------------------------------------------------------
-- confusion matrix and the metrics derived from it

function M.confusion(labels, predicted, k)
  local y = read_labels(labels, 'confusion')
  local p = read_labels(predicted, 'confusion')
  if #p ~= #y then fail(('confusion: %d labels but %d predictions'):format(#y, #p)) end
  if k == nil then
    k = 0
    for i = 1, #y do k = math.max(k, y[i], p[i]) end
  end
  local cm = {}
  for a = 1, k do
    cm[a] = {}
    for b = 1, k do cm[a][b] = 0 end
  end
  for i = 1, #y do
    if y[i] > k or p[i] > k then fail(('confusion: sample %d has class %d/%d, over %d classes'):format(i, y[i], p[i], k)) end
    cm[y[i]][p[i]] = cm[y[i]][p[i]] + 1
  end
  return cm, k
end

function M.confusion_matrix(labels, scores, opts)
  local y, s, k, positive, o = prepare(labels, scores, opts, 'confusion_matrix')
  local cm = M.confusion(y, predict(s, k, positive, o.threshold), k)
  return cm, k
end

local function div(a, b)
  if b == 0 then return NaN end
  return a / b
end

-- Mean over the defined values; NaN and a list of the undefined positions otherwise.
local function mean_defined(values)
  local sum, n, missing = 0, 0, {}
  for i, v in ipairs(values) do
    if isnan(v) then missing[#missing + 1] = i else sum, n = sum + v, n + 1 end
  end
  return n > 0 and sum / n or NaN, missing
end

local METRIC_NAMES = { 'sensitivity', 'specificity', 'precision', 'f1' }

-- All threshold metrics from a confusion matrix (rows = truth). opts: positive,
-- average, zero_division. Returns a table: accuracy, sensitivity, specificity,
-- precision, f1, ovr_accuracy, per_class = {tp=, fp=, fn=, tn=, sensitivity=, ...
-- (arrays over classes)}, notes.
function M.from_confusion(cm, opts)
  opts = check_opts(opts, OPTS, 'from_confusion')
  local k = #cm
  local positive = opts.positive or 2
  local average = opts.average or (k == 2 and 'binary' or 'macro')
  if average == 'binary' and k ~= 2 then fail(('from_confusion: average = binary needs 2 classes, there are %d'):format(k)) end
  local zd = opts.zero_division
  local n, correct = 0, 0
  for a = 1, k do
    for b = 1, k do n = n + cm[a][b] end
    correct = correct + cm[a][a]
  end
  local pc = { tp = {}, fp = {}, fn = {}, tn = {}, support = {}, accuracy = {} }
  for _, name in ipairs(METRIC_NAMES) do pc[name] = {} end
  for c = 1, k do
    local tp, row, col = cm[c][c], 0, 0
    for j = 1, k do row, col = row + cm[c][j], col + cm[j][c] end
    local fn_, fp = row - tp, col - tp
    local tn = n - tp - fn_ - fp
    pc.tp[c], pc.fp[c], pc.fn[c], pc.tn[c], pc.support[c] = tp, fp, fn_, tn, row
    pc.sensitivity[c] = div(tp, tp + fn_)
    pc.specificity[c] = div(tn, tn + fp)
    pc.precision[c] = div(tp, tp + fp)
    pc.f1[c] = div(2 * tp, 2 * tp + fp + fn_)
    pc.accuracy[c] = div(tp + tn, n)
    if zd ~= nil then
      for _, name in ipairs(METRIC_NAMES) do
        if isnan(pc[name][c]) then pc[name][c] = zd end
      end
    end
  end
  local r = { num_classes = k, n = n, average = average, per_class = pc, notes = {},
    accuracy = div(correct, n) }
  if n == 0 then r.notes[#r.notes + 1] = 'no samples' end
  r.ovr_accuracy = mean_defined(pc.accuracy)
  if average == 'binary' then
    r.positive = positive
    for _, name in ipairs(METRIC_NAMES) do
      r[name] = pc[name][positive]
      if isnan(r[name]) and n > 0 then
        r.notes[#r.notes + 1] = ('%s undefined (division by zero: %s)'):format(name,
          name == 'sensitivity' and ('no samples of the positive class %d'):format(positive)
          or name == 'specificity' and ('no samples of the negative class %d'):format(3 - positive)
          or name == 'precision' and ('class %d never predicted'):format(positive)
          or 'no positive samples or predictions')
      end
    end
  else
    for _, name in ipairs(METRIC_NAMES) do
      local m, missing = mean_defined(pc[name])
      r[name] = m
      if #missing > 0 and n > 0 then
        r.notes[#r.notes + 1] = ('%s undefined for class%s %s (division by zero), %s'):format(
          name, #missing > 1 and 'es' or '', table.concat(missing, ', '),
          isnan(m) and 'so the macro average is NaN' or 'left out of the macro average')
      end
    end
  end
  return r
end

local function metric(name)
  return function(labels, scores, opts)
    local y, s, k, positive, o, average = prepare(labels, scores, opts, name)
    local cm = M.confusion(y, predict(s, k, positive, o.threshold), k)
    local r = M.from_confusion(cm, { positive = positive, average = average, zero_division = o.zero_division })
    return r[name]
  end
end
M.accuracy = metric('accuracy')
M.sensitivity = metric('sensitivity')
M.recall = M.sensitivity
M.specificity = metric('specificity')
M.precision = metric('precision')
M.f1 = metric('f1')

---------------------------------------------------------------------------------------
-- AUC and the ROC curve

-- Exact AUC of scores for is_positive (an array of booleans) by the Mann-Whitney U
-- statistic: rank all scores ascending, tied scores sharing their average rank; AUC =
-- (sum of the positives' ranks - P (P + 1) / 2) / (P N). Returns the AUC, or NaN and a
-- note.
function M.binary_auc(is_positive, scores)
  local n = #scores
  local npos = 0
  for i = 1, n do
    if isnan(scores[i]) then return NaN, ('AUC undefined: score %d is NaN'):format(i) end
    if is_positive[i] then npos = npos + 1 end
  end
  local nneg = n - npos
  if npos == 0 or nneg == 0 then
    return NaN, ('AUC undefined: the labels hold %s only (%d samples)'):format(
      npos == 0 and 'negatives' or 'positives', n)
  end
  local order = {}
  for i = 1, n do order[i] = i end
  table.sort(order, function(a, b) return scores[a] < scores[b] end)
  local rank_sum, i = 0, 1
  while i <= n do
    local j = i
    while j < n and scores[order[j + 1]] == scores[order[i]] do j = j + 1 end
    local rank = (i + j) / 2           -- the average of ranks i..j
    for t = i, j do
      if is_positive[order[t]] then rank_sum = rank_sum + rank end
    end
    i = j + 1
  end
  return (rank_sum - npos * (npos + 1) / 2) / (npos * nneg)
end

-- AUC: binary (the positive class's scores) or the macro mean of one-vs-rest AUCs.
-- Returns the AUC, a note (nil when defined), and the per-class AUCs.
local function auc_of(y, s, k, positive, average)
  local classes = {}
  if average == 'binary' then classes = { positive } else for c = 1, k do classes[c] = c end end
  local per, notes = {}, {}
  for _, c in ipairs(classes) do
    local is_pos = {}
    for i = 1, #y do is_pos[i] = y[i] == c end
    local a, note = M.binary_auc(is_pos, class_scores(s, c, positive))
    per[c] = a
    if note then notes[#notes + 1] = average == 'binary' and note or ('class %d: %s'):format(c, note) end
  end
  if average == 'binary' then return per[positive], notes[1], per end
  local values = {}
  for c = 1, k do values[c] = per[c] end
  local m, missing = mean_defined(values)
  local note
  if #missing > 0 then
    note = table.concat(notes, '; ') .. (isnan(m) and '' or '; left out of the macro AUC')
  end
  return m, note, per
end

function M.auc(labels, scores, opts)
  local y, s, k, positive, _, average = prepare(labels, scores, opts, 'auc')
  return auc_of(y, s, k, positive, average)
end

-- ROC curve points for plotting: thresholds run over the distinct scores from the
-- highest down (tied scores make one step); a sample is predicted positive when its
-- score >= the threshold. The first point is (0, 0) with threshold +inf, the last
-- (1, 1). opts.positive picks the class (for K > 2, its column: one-vs-rest). Returns
-- {fpr = {...}, tpr = {...}, thresholds = {...}, auc = (trapezoidal area, equal to the
-- Mann-Whitney AUC), positives = P, negatives = N, note = (when undefined)}.
function M.roc_curve(labels, scores, opts)
  local y, s, _, positive = prepare(labels, scores, opts, 'roc_curve')
  local sc = class_scores(s, positive, positive)
  local n, npos = #y, 0
  for i = 1, n do
    if y[i] == positive then npos = npos + 1 end
    if isnan(sc[i]) then
      return { fpr = {}, tpr = {}, thresholds = {}, auc = NaN, positives = 0, negatives = 0,
        note = ('ROC undefined: score %d is NaN'):format(i) }
    end
  end
  local nneg = n - npos
  local order = {}
  for i = 1, n do order[i] = i end
  table.sort(order, function(a, b) return sc[a] > sc[b] end)
  local r = { fpr = { 0 }, tpr = { 0 }, thresholds = { math.huge }, positives = npos, negatives = nneg }
  local tp, fp, i = 0, 0, 1
  local area = 0
  while i <= n do
    local t = sc[order[i]]
    while i <= n and sc[order[i]] == t do
      if y[order[i]] == positive then tp = tp + 1 else fp = fp + 1 end
      i = i + 1
    end
    local m = #r.fpr + 1
    r.fpr[m], r.tpr[m], r.thresholds[m] = div(fp, nneg), div(tp, npos), t
    area = area + (r.fpr[m] - r.fpr[m - 1]) * (r.tpr[m] + r.tpr[m - 1]) / 2
  end
  if npos == 0 or nneg == 0 then
    r.auc = NaN
    r.note = ('ROC undefined: the labels hold %s only (%d samples)'):format(npos == 0 and 'negatives' or 'positives', n)
  else
    r.auc = area
  end
  return r
end

---------------------------------------------------------------------------------------
-- everything at once

-- summary(labels, scores, opts): {n, num_classes, average, positive (binary),
-- accuracy, ovr_accuracy, sensitivity, specificity, precision, f1, auc, confusion (K x
-- K, rows = truth), per_class = {tp, fp, fn, tn, support, accuracy, sensitivity,
-- specificity, precision, f1, auc: arrays over classes}, notes (array), note (string or
-- nil)}.
function M.summary(labels, scores, opts)
  local y, s, k, positive, o, average = prepare(labels, scores, opts, 'summary')
  local cm = M.confusion(y, predict(s, k, positive, o.threshold), k)
  local r = M.from_confusion(cm, { positive = positive, average = average, zero_division = o.zero_division })
  r.confusion = cm
  local a, note, per = auc_of(y, s, k, positive, average)
  r.auc = a
  if average == 'macro' then
    -- per-class AUCs for every class, also in a binary task summarised as macro
    r.per_class.auc = per
  else
    local _, _, all = auc_of(y, s, k, positive, 'macro')
    r.per_class.auc = all
  end
  if note then table.insert(r.notes, 1, note) end
  r.note = #r.notes > 0 and table.concat(r.notes, '; ') or nil
  return r
end

---------------------------------------------------------------------------------------
-- over runs: mean +- std, tables

-- mean_std(values, opts): the mean and the sample standard deviation (n - 1 in the
-- denominator: the paper's five repeats are a sample of runs, and numpy users would
-- write np.std(x, ddof=1)); opts.population = true divides by n instead. A single
-- value has std NaN (0 with population); an empty list gives NaN, NaN. NaN values
-- propagate. Values may be a Lua array or a tensor. Returns mean, std, n.
function M.mean_std(values, opts)
  opts = check_opts(opts, { population = true }, 'mean_std')
  if is_tensor(values) then values = values:reshape(-1):totable() end
  if type(values) ~= 'table' then fail('mean_std: expected a Lua array of numbers, got ' .. type(values)) end
  local n = #values
  if n == 0 then return NaN, NaN, 0 end
  local sum = 0
  for i = 1, n do
    if type(values[i]) ~= 'number' then fail(('mean_std: value %d is a %s'):format(i, type(values[i]))) end
    sum = sum + values[i]
  end
  local mean = sum / n
  local ss = 0
  for i = 1, n do ss = ss + (values[i] - mean) ^ 2 end
  local d = opts.population and n or n - 1
  return mean, d > 0 and math.sqrt(ss / d) or NaN, n
end

local function fmt_number(v, digits, scale)
  if isnan(v) then return 'nan' end
  if v == math.huge then return 'inf' elseif v == -math.huge then return '-inf' end
  return ('%.' .. digits .. 'f'):format(v * scale)
end

-- The text of one cell: a list of numbers (runs) gives "mean ± std" (a single run: the
-- value alone); {mean = , std = } likewise; a number is formatted; a string is kept.
local function cell_text(v, digits, scale, pm)
  local t = type(v)
  if v == nil then return '' end
  if t == 'string' then return v end
  if t == 'number' then return fmt_number(v, digits, scale) end
  if is_tensor(v) then v = v:reshape(-1):totable(); t = 'table' end
  if t == 'table' then
    local mean, std, n
    if v.mean ~= nil then
      mean, std, n = v.mean, v.std, v.std and 2 or 1
    else
      mean, std, n = M.mean_std(v)
    end
    if n == 1 or std == nil then return fmt_number(mean, digits, scale) end
    return fmt_number(mean, digits, scale) .. pm .. fmt_number(std, digits, scale)
  end
  return tostring(v)
end

local function csv_cell(s)
  if s:find('[,"\r\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local function md_cell(s) return (s:gsub('|', '\\|')) end

-- format_table(rows, columns, opts) -> markdown, csv.
--   rows     an array of tables, one per table row, e.g. {name = 'dual', auc = {five
--            runs}, sensitivity = {...}}; a cell value is a list of numbers (shown as
--            "mean ± std", or the value alone for one run), {mean=, std=}, a number, or
--            a string (kept as is)
--   columns  an array of keys ('auc') or {key = 'auc', title = 'AUC'}; a key's title is
--            the key itself unless given
--   opts     digits (3; 2 with percent), percent (false: multiply by 100, as the
--            paper's tables), pm (' ± ')
-- The Markdown is a pipe table with numbers right-aligned; the CSV has one header line,
-- the same cell texts, quoted when they hold a comma, a quote or a newline, and ends
-- with a newline.
function M.format_table(rows, columns, opts)
  opts = check_opts(opts, { digits = true, percent = true, pm = true }, 'format_table')
  if type(rows) ~= 'table' or type(columns) ~= 'table' then
    fail('format_table: expected rows and columns as Lua arrays')
  end
  local digits = opts.digits or (opts.percent and 2 or 3)
  local scale = opts.percent and 100 or 1
  local pm = opts.pm or ' ± '
  local cols = {}
  for i, c in ipairs(columns) do
    if type(c) == 'string' then cols[i] = { key = c, title = c }
    elseif type(c) == 'table' and c.key then cols[i] = { key = c.key, title = c.title or tostring(c.key) }
    else fail(('format_table: column %d must be a key or {key =, title =}'):format(i)) end
  end
  local header, md_lines, csv_lines, sep = {}, {}, {}, {}
  local numeric = {}
  for j, c in ipairs(cols) do
    header[j] = c.title
    local all_text = true
    for _, row in ipairs(rows) do
      local v = row[c.key]
      if v ~= nil and type(v) ~= 'string' then all_text = false end
    end
    numeric[j] = not all_text
    sep[j] = numeric[j] and '---:' or '---'
  end
  local function md_row(cells)
    local out = {}
    for j, s in ipairs(cells) do out[j] = md_cell(s) end
    return '| ' .. table.concat(out, ' | ') .. ' |'
  end
  local function csv_row(cells)
    local out = {}
    for j, s in ipairs(cells) do out[j] = csv_cell(s) end
    return table.concat(out, ',')
  end
  md_lines[1], md_lines[2] = md_row(header), '|' .. table.concat(sep, '|') .. '|'
  csv_lines[1] = csv_row(header)
  for _, row in ipairs(rows) do
    local cells = {}
    for j, c in ipairs(cols) do cells[j] = cell_text(row[c.key], digits, scale, pm) end
    md_lines[#md_lines + 1] = md_row(cells)
    csv_lines[#csv_lines + 1] = csv_row(cells)
  end
  return table.concat(md_lines, '\n') .. '\n', table.concat(csv_lines, '\n') .. '\n'
end


return M
