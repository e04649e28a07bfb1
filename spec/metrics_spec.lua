-- metrics_spec.lua: fovea.metrics against cases computed by hand: AUC by the
-- Mann-Whitney statistic with ties counted 1/2, perfect and inverted classifiers, ROC
-- points, a 3-class confusion matrix with its macro averages, binary sensitivity and
-- specificity with either positive class, NaN and notes for undefined values,
-- mean_std and format_table.
local fv = require 'fovea'
local metrics = require 'fovea.metrics'

local function isnan(x) return x ~= x end

local function near(want, got, what, tol)
  tol = tol or 1e-12
  if not (math.abs(got - want) <= tol) then
    error(('%s is %.17g, expected %.17g'):format(what or 'value', got, want), 2)
  end
end

local function near_list(want, got, what)
  assert.are.equal(#want, #got, (what or 'list') .. ': lengths differ')
  for i = 1, #want do near(want[i], got[i], ('%s[%d]'):format(what or 'list', i)) end
end

-- rows {1 - s, s} from positive-class scores s
local function rows_of(scores)
  local r = {}
  for i, s in ipairs(scores) do r[i] = { 1 - s, s } end
  return r
end

describe('metrics: AUC', function()
  -- positives (class 2): 0.35, 0.8, 0.4; negatives: 0.1, 0.4. Pairs won: 0.35 > 0.1 (1),
  -- 0.8 > both (2), 0.4 > 0.1 (1) and 0.4 = 0.4 (1/2): 4.5 of 6 = 0.75. By ranks: 0.1 -> 1,
  -- 0.35 -> 2, 0.4 and 0.4 -> 3.5 each, 0.8 -> 5; positives' sum 10.5 - 3*4/2 = 4.5.
  local labels = { 1, 1, 2, 2, 2 }
  local scores = { 0.1, 0.4, 0.35, 0.8, 0.4 }

  it('counts a tie as 1/2 (hand-computed 0.75)', function()
    near(0.75, metrics.auc(labels, scores), 'AUC')
  end)

  it('takes the positive class from the options (class 1 scores: 1.5 / 6)', function()
    -- the vector is then the score of class 1: 0.1 and 0.4 against 0.35, 0.8, 0.4
    near(0.25, metrics.auc(labels, scores, { positive = 1 }), 'AUC')
    -- with rows, the positive class picks its column
    near(0.75, metrics.auc(labels, rows_of(scores), { positive = 2 }), 'AUC rows, positive 2')
    near(0.75, metrics.auc(labels, rows_of(scores), { positive = 1 }), 'AUC rows, positive 1')
  end)

  it('accepts tensors: int64 labels, float (N) and (N, K) scores', function()
    local y = fv.tensor(labels, { dtype = 'int64' })
    near(0.75, metrics.auc(y, fv.tensor(scores, { dtype = 'float64' })), 'AUC vector')
    near(0.75, metrics.auc(y, fv.tensor(rows_of(scores), { dtype = 'float64' })), 'AUC matrix')
    near(0.75, metrics.auc(y:view(5, 1), fv.tensor(scores, { dtype = 'float64' }):view(5, 1)), 'AUC Nx1')
  end)

  it('is 1 for a perfect classifier, 0 for an inverted one, 1/2 for constant scores', function()
    local y = { 1, 1, 2, 2, 1, 2 }
    near(1, metrics.auc(y, { 0.1, 0.2, 0.8, 0.9, 0.3, 0.7 }), 'perfect')
    near(0, metrics.auc(y, { 0.9, 0.8, 0.2, 0.1, 0.7, 0.3 }), 'inverted')
    near(0.5, metrics.auc(y, { 0.5, 0.5, 0.5, 0.5, 0.5, 0.5 }), 'constant')
  end)

  it('agrees with a brute-force count over all pairs on random data with ties', function()
    local seed = 12345
    local function rnd() seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 end
    local y, s = {}, {}
    for i = 1, 300 do
      y[i] = rnd() < 0.3 and 2 or 1
      s[i] = math.floor((rnd() + (y[i] == 2 and 0.3 or 0)) * 20) / 20   -- many ties
    end
    local won, pairs_ = 0, 0
    for i = 1, #y do
      if y[i] == 2 then
        for j = 1, #y do
          if y[j] == 1 then
            pairs_ = pairs_ + 1
            if s[i] > s[j] then won = won + 1 elseif s[i] == s[j] then won = won + 0.5 end
          end
        end
      end
    end
    near(won / pairs_, metrics.auc(y, s), 'AUC', 1e-12)
    near(won / pairs_, metrics.roc_curve(y, s).auc, 'trapezoidal ROC area', 1e-12)
  end)

  it('is NaN with a note when the labels hold one class only', function()
    local a, note = metrics.auc({ 2, 2, 2 }, { 0.2, 0.7, 0.9 })
    assert.is_true(isnan(a))
    assert.truthy(note:find('AUC undefined', 1, true), note)
    local s = metrics.summary({ 2, 2, 2 }, { 0.2, 0.7, 0.9 })
    assert.is_true(isnan(s.auc))
    assert.is_true(isnan(s.specificity))
    near(2 / 3, s.sensitivity, 'sensitivity')
    assert.truthy(s.note:find('AUC undefined', 1, true), s.note)
    assert.truthy(s.note:find('specificity undefined', 1, true), s.note)
  end)

  it('is NaN with a note when a score is NaN', function()
    local a, note = metrics.auc({ 1, 2 }, { 0.2, 0 / 0 })
    assert.is_true(isnan(a))
    assert.truthy(note:find('NaN', 1, true))
  end)
end)

describe('metrics: ROC curve', function()
  it('gives the points with ties grouped, from (0, 0) to (1, 1)', function()
    -- thresholds, from the top: inf, 0.8 (tp 1), 0.4 (one positive and one negative
    -- together), 0.35, 0.1; 3 positives, 2 negatives
    local r = metrics.roc_curve({ 1, 1, 2, 2, 2 }, { 0.1, 0.4, 0.35, 0.8, 0.4 })
    near_list({ 0, 0, 0.5, 0.5, 1 }, r.fpr, 'fpr')
    near_list({ 0, 1 / 3, 2 / 3, 1, 1 }, r.tpr, 'tpr')
    assert.are.same({ math.huge, 0.8, 0.4, 0.35, 0.1 }, r.thresholds)
    near(0.75, r.auc, 'area')
    assert.are.equal(3, r.positives)
    assert.are.equal(2, r.negatives)
  end)

  it('works one-vs-rest on a column of K scores', function()
    local r = metrics.roc_curve({ 1, 2, 3 }, { { 0.7, 0.2, 0.1 }, { 0.1, 0.7, 0.2 }, { 0.2, 0.3, 0.5 } }, { positive = 3 })
    near_list({ 0, 0, 0.5, 1 }, r.fpr, 'fpr')
    near_list({ 0, 1, 1, 1 }, r.tpr, 'tpr')
    near(1, r.auc, 'area')
  end)

  it('marks a one-class curve undefined', function()
    local r = metrics.roc_curve({ 1, 1 }, { 0.3, 0.6 })
    assert.is_true(isnan(r.auc))
    assert.truthy(r.note)
  end)
end)

describe('metrics: binary threshold metrics', function()
  -- threshold 0.5: predictions 1 2 1 1 2 1 2 against truth 1 1 1 1 2 2 2:
  -- tp 2 (i5, i7), fn 1 (i6), fp 1 (i2), tn 3
  local labels = { 1, 1, 1, 1, 2, 2, 2 }
  local scores = { 0.1, 0.6, 0.3, 0.2, 0.7, 0.4, 0.9 }

  it('computes the confusion matrix (rows = truth)', function()
    assert.are.same({ { 3, 1 }, { 1, 2 } }, metrics.confusion_matrix(labels, scores))
    assert.are.same({ 1, 2, 1, 1, 2, 1, 2 }, metrics.predict(scores))
  end)

  it('computes sensitivity, specificity, precision, F1, accuracy for class 2', function()
    local s = metrics.summary(labels, scores)
    near(2 / 3, s.sensitivity, 'sensitivity')
    near(3 / 4, s.specificity, 'specificity')
    near(2 / 3, s.precision, 'precision')
    near(2 / 3, s.f1, 'f1')
    near(5 / 7, s.accuracy, 'accuracy')
    assert.are.equal(2, s.positive)
    assert.are.equal('binary', s.average)
    assert.is_nil(s.note)
    -- AUC: positives 0.7, 0.4, 0.9 against 0.1, 0.6, 0.3, 0.2: 4 + 3 + 4 = 11 of 12
    near(11 / 12, s.auc, 'auc')
    near(2 / 3, metrics.sensitivity(labels, scores), 'sensitivity()')
    near(2 / 3, metrics.recall(labels, scores), 'recall()')
    near(3 / 4, metrics.specificity(labels, scores), 'specificity()')
    near(2 / 3, metrics.precision(labels, scores), 'precision()')
    near(2 / 3, metrics.f1(labels, scores), 'f1()')
    near(5 / 7, metrics.accuracy(labels, scores), 'accuracy()')
  end)

  it('swaps sensitivity and specificity with positive = 1', function()
    local s = metrics.summary(labels, rows_of(scores), { positive = 1 })
    near(3 / 4, s.sensitivity, 'sensitivity')
    near(2 / 3, s.specificity, 'specificity')
    near(3 / 4, s.precision, 'precision')   -- predicted 1: i1 i3 i4 i6, of which 3 are 1
    near(5 / 7, s.accuracy, 'accuracy')
    near(11 / 12, s.auc, 'auc')
  end)

  it('moves the threshold', function()
    local s = metrics.summary(labels, scores, { threshold = 0.35 })
    near(1, s.sensitivity, 'sensitivity')
    near(3 / 4, s.specificity, 'specificity')
  end)

  it('gives NaN, not an error, on division by zero', function()
    local s = metrics.summary({ 1, 2 }, { 0.1, 0.2 })   -- nothing predicted positive
    assert.is_true(isnan(s.precision))
    near(0, s.sensitivity, 'sensitivity')
    near(0, s.f1, 'f1')
    assert.truthy(s.note:find('precision undefined', 1, true), s.note)
    local z = metrics.summary({ 1, 2 }, { 0.1, 0.2 }, { zero_division = 0 })
    near(0, z.precision, 'precision with zero_division = 0')
    local e = metrics.summary({}, {})
    assert.is_true(isnan(e.accuracy))
    assert.is_true(isnan(e.auc))
  end)

  it('names bad input', function()
    assert.has_error(function() metrics.auc({ 1, 2 }, { 0.1 }) end, 'fovea.metrics: auc: 2 labels but 1 scores')
    assert.has_error(function() metrics.auc({ 0, 1 }, { 0.1, 0.2 }) end,
      'fovea.metrics: auc: label 1 is 0; labels are classes counted from 1')
    assert.has_error(function() metrics.summary({ 1, 3 }, { 0.1, 0.2 }) end,
      'fovea.metrics: summary: label 2 is 3, but there are 2 classes')
    assert.has_error(function() metrics.summary({ 1, 2 }, { 0.1, 0.2 }, { postive = 1 }) end,
      'fovea.metrics: summary: unknown option postive')
  end)
end)

describe('metrics: 3 classes', function()
  -- predictions (argmax): 1 1 2 | 2 3 | 3 3 1
  local labels = { 1, 1, 1, 2, 2, 3, 3, 3 }
  local probs = {
    { 0.7, 0.2, 0.1 }, { 0.5, 0.3, 0.2 }, { 0.3, 0.4, 0.3 },
    { 0.2, 0.7, 0.1 }, { 0.1, 0.4, 0.5 },
    { 0.1, 0.1, 0.8 }, { 0.2, 0.2, 0.6 }, { 0.4, 0.3, 0.3 },
  }

  it('computes the confusion matrix', function()
    local cm, k = metrics.confusion_matrix(labels, probs)
    assert.are.same({ { 2, 1, 0 }, { 0, 1, 1 }, { 1, 0, 2 } }, cm)
    assert.are.equal(3, k)
    assert.are.same(cm, (metrics.confusion_matrix(fv.tensor(labels, { dtype = 'int64' }), fv.tensor(probs))))
  end)

  it('macro-averages the one-vs-rest metrics (by hand)', function()
    -- class 1: tp 2 fn 1 fp 1 tn 4; class 2: tp 1 fn 1 fp 1 tn 5; class 3: tp 2 fn 1 fp 1 tn 4
    local s = metrics.summary(labels, probs)
    assert.are.equal('macro', s.average)
    near(5 / 8, s.accuracy, 'accuracy')
    near_list({ 2 / 3, 1 / 2, 2 / 3 }, s.per_class.sensitivity, 'sensitivity')
    near_list({ 4 / 5, 5 / 6, 4 / 5 }, s.per_class.specificity, 'specificity')
    near_list({ 2 / 3, 1 / 2, 2 / 3 }, s.per_class.precision, 'precision')
    near_list({ 2 / 3, 1 / 2, 2 / 3 }, s.per_class.f1, 'f1')
    near((2 / 3 + 1 / 2 + 2 / 3) / 3, s.sensitivity, 'macro sensitivity')   -- 11/18
    near((4 / 5 + 5 / 6 + 4 / 5) / 3, s.specificity, 'macro specificity')   -- 73/90
    near(11 / 18, s.precision, 'macro precision')
    near(11 / 18, s.f1, 'macro f1')
    near(6 / 8, s.ovr_accuracy, 'one-vs-rest accuracy')
    assert.are.same({ 3, 2, 3 }, s.per_class.support)
  end)

  it('macro-averages the one-vs-rest AUCs, ties counted 1/2 (by hand)', function()
    -- class 1, column 1: 0.7 0.5 0.3 against 0.2 0.1 0.1 0.2 0.4: 5 + 5 + 4 = 14 / 15
    -- class 2, column 2: 0.7 0.4 against 0.2 0.3 0.4 0.1 0.2 0.3: 6 + 5.5 = 11.5 / 12
    -- class 3, column 3: 0.8 0.6 0.3 against 0.1 0.2 0.3 0.1 0.5: 5 + 5 + 3.5 = 13.5 / 15
    local a, note, per = metrics.auc(labels, probs)
    near_list({ 14 / 15, 11.5 / 12, 13.5 / 15 }, per, 'per-class AUC')
    near((14 / 15 + 11.5 / 12 + 13.5 / 15) / 3, a, 'macro AUC')
    assert.is_nil(note)
    near(a, metrics.summary(labels, probs).auc, 'summary AUC')
  end)

  it('leaves a class absent from the labels out of the macro AUC, with a note', function()
    local s = metrics.summary({ 1, 1, 2, 2 }, { { 0.8, 0.1, 0.1 }, { 0.6, 0.3, 0.1 }, { 0.2, 0.7, 0.1 }, { 0.5, 0.4, 0.1 } })
    assert.is_true(isnan(s.per_class.auc[3]))
    near(1, s.auc, 'macro AUC of classes 1 and 2')
    assert.truthy(s.note:find('class 3', 1, true), s.note)
    assert.is_true(isnan(s.per_class.sensitivity[3]))
    near((1 + 1 / 2) / 2, s.sensitivity, 'macro sensitivity over the defined classes')
  end)

  it('can macro-average a binary task', function()
    local s = metrics.summary({ 1, 1, 1, 1, 2, 2, 2 }, { 0.1, 0.6, 0.3, 0.2, 0.7, 0.4, 0.9 }, { average = 'macro' })
    near((3 / 4 + 2 / 3) / 2, s.sensitivity, 'macro sensitivity')
    near(11 / 12, s.auc, 'macro AUC (the same for both classes)')
  end)
end)

describe('metrics: mean_std and format_table', function()
  it('gives the mean and the sample standard deviation (n - 1)', function()
    -- deviations -0.01 0.01 0 -0.02 0.02: sum of squares 0.001
    local m, s, n = metrics.mean_std({ 0.91, 0.93, 0.92, 0.90, 0.94 })
    near(0.92, m, 'mean', 1e-15)
    near(math.sqrt(0.001 / 4), s, 'sample std', 1e-15)
    assert.are.equal(5, n)
    local _, sp = metrics.mean_std({ 0.91, 0.93, 0.92, 0.90, 0.94 }, { population = true })
    near(math.sqrt(0.001 / 5), sp, 'population std', 1e-15)
    local m1, s1 = metrics.mean_std({ 5 })
    assert.are.equal(5, m1)
    assert.is_true(isnan(s1))
    local m0, s0 = metrics.mean_std({})
    assert.is_true(isnan(m0) and isnan(s0))
    near(2.5, (metrics.mean_std(fv.tensor({ 1, 2, 3, 4 }))), 'tensor mean')
  end)

  it("formats the paper's mean ± std cells as Markdown and CSV", function()
    local rows = {
      { name = 'ResNet18', auc = { 0.91, 0.93, 0.92, 0.90, 0.94 }, acc = { mean = 0.9051, std = 0.0121 } },
      { name = 'Ours, dual', auc = { 0.95 }, acc = 'n/a' },
    }
    local cols = { { key = 'name', title = 'Method' }, { key = 'auc', title = 'AUC' }, { key = 'acc', title = 'ACC' } }
    local md, csv = metrics.format_table(rows, cols)
    assert.are.equal(table.concat({
      '| Method | AUC | ACC |',
      '|---|---:|---:|',
      '| ResNet18 | 0.920 ± 0.016 | 0.905 ± 0.012 |',
      '| Ours, dual | 0.950 | n/a |',
    }, '\n') .. '\n', md)
    assert.are.equal(table.concat({
      'Method,AUC,ACC',
      'ResNet18,0.920 ± 0.016,0.905 ± 0.012',
      '"Ours, dual",0.950,n/a',
    }, '\n') .. '\n', csv)
    local pmd = metrics.format_table(rows, { 'name', 'auc' }, { percent = true })
    assert.truthy(pmd:find('| ResNet18 | 92.00 ± 1.58 |', 1, true), pmd)
    assert.truthy(pmd:find('| name | auc |', 1, true), pmd)
  end)
end)
