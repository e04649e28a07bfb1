-- recipes/messidor.lua: the main job. Until the models and data issues land, this is a
-- short demo of the core on the CPU: it fits a linear classifier to a synthetic
-- two-class problem by gradient descent written with tensor ops, and prints the
-- loss falling and the final accuracy.
--   luajit recipes/messidor.lua [--steps N] [--seed S]
package.path = './?.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'

local function parse_args(argv)
  local opts = { steps = 200, seed = 1 }
  local i = 1
  while i <= #argv do
    local key = argv[i]:match('^%-%-(.+)$')
    if key == 'help' then
      print('usage: luajit recipes/messidor.lua [--steps N (200)] [--seed S (1)]')
      os.exit(0)
    end
    if opts[key] == nil or argv[i + 1] == nil or not tonumber(argv[i + 1]) then
      io.stderr:write('unknown or incomplete option ' .. argv[i] .. ' (try --help)\n')
      os.exit(2)
    end
    opts[key] = tonumber(argv[i + 1])
    i = i + 2
  end
  return opts
end

local opts = parse_args(arg)
local n, d = 512, 16
local g = fv.generator(opts.seed)
-- points x (n, d); labels from a hidden direction w_true: y = [x . w_true > 0]
local x = fv.randn({n, d}, {generator = g})
local w_true = fv.randn({d, 1}, {generator = g})
local y = x:matmul(w_true):gt(0)

-- logistic regression, gradient of the mean binary cross-entropy by hand
local w = fv.zeros(d, 1)
local lr = 0.5
print(('fovea %s demo: logistic regression on %d synthetic points, %d features'):format(fv.version(), n, d))
for step = 1, opts.steps do
  local p = x:matmul(w):sigmoid()                                    -- (n, 1)
  local eps = 1e-7
  local loss = -(y * (p + eps):log() + (1 - y) * (1 - p + eps):log()):mean():item()
  local grad = x:t():matmul(p - y) / n                               -- (d, 1)
  w = w - lr * grad
  if step == 1 or step % 50 == 0 then print(('step %4d  loss %.4f'):format(step, loss)) end
end
local accuracy = x:matmul(w):gt(0):eq(y):mean():item()
print(('training accuracy %.1f%%'):format(100 * accuracy))
