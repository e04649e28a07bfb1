-- serialize_spec.lua: safetensors files (fv.save, fv.load) and checkpoints
-- (fv.save_checkpoint, fv.load_checkpoint): round trips of every dtype and of views, the
-- bytes on disk, a file PyTorch wrote, a file fovea wrote read by the Python reference
-- reader (skipped when it is not installed), hostile files, and atomic writes across a
-- crash mid-save.
local helpers = require 'spec.helpers'
local read, write, exists = helpers.read, helpers.write, helpers.exists
local fv = require 'fovea'
local ffi = require 'ffi'
local C = fv.C

---------------------------------------------------------------------------------------
-- helpers

local function succeeded(status) return status == 0 or status == true end

local dir
local function tmp(name) return dir .. '/' .. name end

local function listdir(d)
  local p = io.popen('ls -A "' .. d .. '"')
  local names = {}
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  return names
end

-- Little-endian u64 of a Lua number (exact below 2^53) or a uint64_t cdata.
local function u64le(n)
  local v = ffi.new('uint64_t', n)
  local bytes = {}
  for i = 1, 8 do
    bytes[i] = string.char(tonumber(v % 256))
    v = v / 256
  end
  return table.concat(bytes)
end

-- A safetensors file from header text and data bytes (no padding added).
local function build(header, data) return u64le(#header) .. header .. (data or '') end

-- Row-major values of t as doubles.
local function values(t)
  local n = t:numel()
  local buf = ffi.new('double[?]', math.max(n, 1))
  assert(C.fv_copy_to_f64(t.p, buf, n) == 0)
  local out = {}
  for i = 1, n do out[i] = buf[i - 1] end
  return out
end

-- Row-major int64 values of t as decimal strings (exact).
local function int64_strings(t)
  local c = t:contiguous()
  local p = ffi.cast('int64_t *', C.fv_tensor_data(c.p))
  local out = {}
  for i = 1, c:numel() do out[i] = (tostring(p[i - 1]):gsub('LL$', '')) end
  return out
end

local function is_negative_zero(x) return x == 0 and 1 / x < 0 end

-- Checks that a and b have the same dtype, shape and values (bit-exact for floats,
-- NaNs equal, signed zeros told apart).
local function assert_same_tensor(a, b, what)
  assert.are.equal(a:dtype(), b:dtype(), what)
  assert.are.same(a:size(), b:size(), what)
  if a:dtype() == 'int64' then
    assert.are.same(int64_strings(a), int64_strings(b), what)
    return
  end
  local va, vb = values(a), values(b)
  assert.are.equal(#va, #vb, what)
  for i = 1, #va do
    local x, y = va[i], vb[i]
    if x ~= x then
      assert.is_true(y ~= y, what .. ' element ' .. i)
    else
      assert.are.equal(x, y, what .. ' element ' .. i)
      assert.are.equal(is_negative_zero(x), is_negative_zero(y), what .. ' sign of zero at ' .. i)
    end
  end
end

-- The error message of fn(...), which must fail.
local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, 'expected an error')
  return tostring(err)
end

-- fv.load(path) fails with a message that names the file and contains each fragment.
local function assert_load_fails(path, ...)
  local err = error_of(fv.load, path)
  assert.is_truthy(err:find("load '" .. path .. "'", 1, true), 'message does not name the file: ' .. err)
  for _, fragment in ipairs { ... } do
    assert.is_truthy(err:find(fragment, 1, true), ('message lacks %q: %s'):format(fragment, err))
  end
  return err
end

-- A small strict JSON decoder (objects, arrays, strings with escapes, numbers, literals).
local function json_decode(text)
  local pos = 1
  local function ws() pos = text:find('[^ \t\r\n]', pos) or #text + 1 end
  local value
  local function utf8(cp)
    if cp < 0x80 then return string.char(cp) end
    if cp < 0x800 then return string.char(0xc0 + math.floor(cp / 64), 0x80 + cp % 64) end
    if cp < 0x10000 then
      return string.char(0xe0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
    end
    return string.char(0xf0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
      0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local c = text:sub(pos, pos)
      if c == '"' then pos = pos + 1 break end
      if c == '' then error('json: unterminated string') end
      if c == '\\' then
        local e = text:sub(pos + 1, pos + 1)
        local simple = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }
        if simple[e] then
          out[#out + 1] = simple[e]
          pos = pos + 2
        elseif e == 'u' then
          local cp = tonumber(text:sub(pos + 2, pos + 5), 16)
          pos = pos + 6
          if cp >= 0xd800 and cp < 0xdc00 then
            local lo = tonumber(text:sub(pos + 2, pos + 5), 16)
            cp = 0x10000 + (cp - 0xd800) * 1024 + (lo - 0xdc00)
            pos = pos + 6
          end
          out[#out + 1] = utf8(cp)
        else
          error('json: bad escape')
        end
      else
        out[#out + 1] = c
        pos = pos + 1
      end
    end
    return table.concat(out)
  end
  function value()
    ws()
    local c = text:sub(pos, pos)
    if c == '{' then
      local obj = {}
      pos = pos + 1
      ws()
      if text:sub(pos, pos) == '}' then pos = pos + 1 return obj end
      while true do
        ws()
        local k = str()
        ws()
        assert(text:sub(pos, pos) == ':', 'json: expected :')
        pos = pos + 1
        obj[k] = value()
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == '}' then return obj end
        assert(d == ',', 'json: expected , or }')
      end
    elseif c == '[' then
      local arr = {}
      pos = pos + 1
      ws()
      if text:sub(pos, pos) == ']' then pos = pos + 1 return arr end
      while true do
        arr[#arr + 1] = value()
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == ']' then return arr end
        assert(d == ',', 'json: expected , or ]')
      end
    elseif c == '"' then
      return str()
    elseif text:find('^true', pos) then pos = pos + 4 return true
    elseif text:find('^false', pos) then pos = pos + 5 return false
    elseif text:find('^null', pos) then pos = pos + 4 return nil
    else
      local num = text:match('^-?%d+%.?%d*[eE]?[-+]?%d*', pos)
      assert(num and #num > 0, 'json: unexpected ' .. c)
      pos = pos + #num
      return tonumber(num)
    end
  end
  local v = value()
  ws()
  assert(pos > #text, 'json: trailing text')
  return v
end

-- The Python reference reader, when /usr/bin/python3 (or python3) has safetensors.
local python
local function find_python()
  if python ~= nil then return python end
  python = false
  for _, py in ipairs { '/usr/bin/python3', 'python3' } do
    -- LD_PRELOAD (make sanitize's ASan runtime) is for LuaJIT, not for Python
    local cmd = ('env -u LD_PRELOAD %s tools/check_safetensors_roundtrip.py --probe >/dev/null 2>&1'):format(py)
    if succeeded(os.execute(cmd)) then
      python = py
      break
    end
  end
  return python
end

local function python_read(path)
  local p = io.popen(('env -u LD_PRELOAD %s tools/check_safetensors_roundtrip.py "%s" 2>&1'):format(python, path))
  local out = p:read('*a')
  p:close()
  local ok, decoded = pcall(json_decode, out)
  assert(ok, 'the reference reader printed: ' .. out)
  return decoded
end

local NO_PYTHON = 'Python reference reader not available: install Debian python3 and '
  .. '`pip install --user safetensors` (tools/check_safetensors_roundtrip.py --probe fails)'

setup(function()
  dir = os.tmpname()
  os.remove(dir)
  assert(succeeded(os.execute('mkdir -p "' .. dir .. '"')))
end)

teardown(function()
  if dir and dir:match('^/tmp/') then os.execute('rm -rf "' .. dir .. '"') end
end)

---------------------------------------------------------------------------------------

describe('fv.save and fv.load', function()
  it('round-trips every dtype, 0-dim and empty tensors', function()
    local path = tmp('dtypes.safetensors')
    local ts = {
      f32 = fv.tensor({{1.5, -2.25, 0.1}, {1e-38, 3.4e38, -0.0}}),
      f64 = fv.tensor({0.1, 1 / 3, -1e-300, 2 ^ 60, -0.0, math.huge, -math.huge, 0 / 0}, {dtype = 'float64'}),
      i64 = fv.tensor({0, -1, 2 ^ 53, -(2 ^ 53), 123456789012}, {dtype = 'int64'}),
      u8 = fv.tensor({{0, 1, 2}, {127, 128, 255}}, {dtype = 'uint8'}),
      scalar = fv.tensor(7.5, {dtype = 'float64'}),
      scalar_u8 = fv.tensor(9, {dtype = 'uint8'}),
      empty = fv.zeros({0, 3}),
      big = fv.randn({3, 4, 5, 6}, {seed = 11}),
    }
    -- int64 beyond 2^53, exactly
    local i64 = ffi.cast('int64_t *', C.fv_tensor_data(ts.i64.p))
    i64[4] = -9223372036854775807LL - 1
    fv.save(path, ts)
    local back, meta = fv.load(path)
    assert.are.same({}, meta)
    local n = 0
    for name, t in pairs(ts) do
      n = n + 1
      assert.is_not_nil(back[name], name)
      assert.is_true(back[name]:is_contiguous())
      assert.are.equal('cpu', back[name]:device())
      assert_same_tensor(t, back[name], name)
    end
    for _ in pairs(back) do n = n - 1 end
    assert.are.equal(0, n)
    assert.are.same({'0', '-1', '9007199254740992', '-9007199254740992', '-9223372036854775808'},
      int64_strings(back.i64))
  end)

  it('writes views (transposed, narrowed, selected, expanded) as their row-major values', function()
    local path = tmp('views.safetensors')
    local base = fv.arange(24, {dtype = 'float64'}):view(2, 3, 4)
    local ts = {
      transposed = base:transpose(1, 3),
      narrowed = base:narrow(3, 2, 2),
      selected = base:select(2, 2),
      expanded = fv.tensor({1, 2, 3}, {dtype = 'int64'}):view(3, 1):expand(3, 4),
      permuted_u8 = fv.arange(24, {dtype = 'uint8'}):view(2, 3, 4):permute(3, 1, 2),
      column = fv.randn({5, 6}, {seed = 3}):t():select(1, 2),
    }
    for name, t in pairs(ts) do
      if name ~= 'column' then assert.is_false(t:is_contiguous(), name) end
    end
    fv.save(path, ts)
    local back = fv.load(path)
    for name, t in pairs(ts) do assert_same_tensor(t:contiguous(), back[name], name) end
    assert.are.same({4, 3, 2}, back.transposed:size())
    assert.are.same({0, 12, 4, 16, 8, 20}, {table.unpack(values(back.transposed), 1, 6)})
    assert.are.same({1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3}, values(back.expanded))
  end)

  it('keeps metadata strings exactly (quotes, escapes, UTF-8), numbers as tostring', function()
    local path = tmp('meta.safetensors')
    local meta = {
      plain = 'value',
      quoted = 'say "hi" \\ back/slash',
      controls = 'tab\tnew\nline\r\1\31',
      unicode = 'café ✓ 😀',
      empty = '',
      [''] = 'empty key',
      ['key "with" quotes'] = 'x',
    }
    fv.save(path, {x = fv.ones(1)}, meta)
    local _, back = fv.load(path)
    assert.are.same(meta, back)
    fv.save(path, {x = fv.ones(1)}, {epoch = 12, lr = 0.5, flag = true})
    _, back = fv.load(path)
    assert.are.same({epoch = '12', lr = '0.5', flag = 'true'}, back)
  end)

  it('writes the format exactly: u64 length, JSON padded to 8 bytes, little-endian data', function()
    local path = tmp('bytes.safetensors')
    fv.save(path, {b = fv.tensor({1, 2}, {dtype = 'uint8'}), a = fv.tensor({1.0, -2.0})}, {k = 'v'})
    local bytes = read(path)
    local n = 0
    for i = 8, 1, -1 do n = n * 256 + bytes:byte(i) end
    assert.are.equal(0, n % 8)
    local header = bytes:sub(9, 8 + n)
    assert.are.equal('{', header:sub(1, 1))
    assert.is_truthy(header:match('^{.*}%s*$'))
    assert.are.equal(
      '{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
      .. '"b":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}}', (header:gsub(' +$', '')))
    assert.are.equal('\0\0\128\63\0\0\0\192\1\2', bytes:sub(9 + n))
  end)

  it('saves an empty table and loads it back', function()
    local path = tmp('nothing.safetensors')
    fv.save(path, {})
    local t, m = fv.load(path)
    assert.are.same({}, t)
    assert.are.same({}, m)
    assert.are.equal(16, #read(path))
  end)

  it('refuses bad arguments with clear errors and leaves the old file alone', function()
    local path = tmp('args.safetensors')
    fv.save(path, {x = fv.ones(3)})
    local before = read(path)
    assert.is_truthy(error_of(fv.save, path, {x = 3}):find('tensors["x"] is a number, expected a tensor', 1, true))
    assert.is_truthy(error_of(fv.save, path, {fv.ones(1)}):find('tensor names must be strings', 1, true))
    assert.is_truthy(error_of(fv.save, path, fv.ones(1)):find('expected a table of name = tensor', 1, true))
    assert.is_truthy(error_of(fv.save, 42, {}):find('path must be a non-empty string', 1, true))
    assert.is_truthy(error_of(fv.save, path, {__metadata__ = fv.ones(1)}):find("'__metadata__' is reserved", 1, true))
    assert.is_truthy(error_of(fv.save, path, {x = fv.ones(1)}, {k = {}}):find('metadata["k"] is a table', 1, true))
    assert.is_truthy(error_of(fv.save, path, {['a\0b'] = fv.ones(1)}):find('NUL', 1, true))
    assert.is_truthy(error_of(fv.save, path, {['\255'] = fv.ones(1)}):find('not valid UTF-8', 1, true))
    local freed = fv.ones(2)
    freed:free()
    local err = error_of(fv.save, path, {a = fv.ones(1), f = freed})
    assert.is_truthy(err:find("save '" .. path .. "': tensor 'f'", 1, true), err)
    assert.are.equal(before, read(path))
    assert.are.same({'args.safetensors'}, (function()
      local l = {}
      for _, f in ipairs(listdir(dir)) do if f:find('^args') then l[#l + 1] = f end end
      return l
    end)())
  end)

  it('fails cleanly when the file cannot be written, removing the temporary file', function()
    local missing = tmp('no/such/dir/x.safetensors')
    local err = error_of(fv.save, missing, {x = fv.ones(1)})
    assert.is_truthy(err:find("save '" .. missing .. "'", 1, true), err)
    assert.is_truthy(err:find('No such file or directory', 1, true), err)
    -- a directory in the way: the rename fails and the temporary file goes
    local sub = tmp('adir')
    os.execute('mkdir -p "' .. sub .. '/inner"')
    err = error_of(fv.save, sub .. '/inner', {x = fv.ones(1)})
    assert.is_truthy(err:find("save '" .. sub .. "/inner'", 1, true), err)
    assert.is_truthy(err:find('Is a directory', 1, true), err)
    assert.are.same({'inner'}, listdir(sub))
  end)
end)

describe('reading a file PyTorch wrote', function()
  local fixture = 'spec/fixtures/safetensors/torch_small.safetensors'
  local expected = json_decode(read('spec/fixtures/safetensors/torch_small.json'))

  it('gives every tensor with its dtype, shape and exact values', function()
    local ts, meta = fv.load(fixture)
    local n = 0
    for name, want in pairs(expected.tensors) do
      n = n + 1
      local t = ts[name]
      assert.is_not_nil(t, name)
      assert.are.equal(want.dtype, t:dtype(), name)
      assert.are.same(want.shape, t:size(), name)
      if want.dtype == 'int64' then
        assert.are.same(want.values, int64_strings(t), name)
      else
        local got = values(t)
        assert.are.equal(#want.values, #got, name)
        for i, v in ipairs(want.values) do
          assert.are.equal(v, got[i], name .. ' element ' .. i)
          assert.are.equal(is_negative_zero(v), is_negative_zero(got[i]), name .. ' sign at ' .. i)
        end
      end
    end
    for _ in pairs(ts) do n = n - 1 end
    assert.are.equal(0, n)
    assert.are.same(expected.metadata, meta)
    assert.are.equal(0, ts.scalar_f32:dim())
    assert.are.equal(3.25, ts.scalar_f32:item())
    assert.are.same({2, 3, 4}, ts.cube_f32:size())
  end)

  it('lists names and metadata through the C API', function()
    local fp = ffi.new('fv_safetensors*[1]')
    assert.are.equal(0, C.fv_safetensors_open(fp, fixture))
    local f = fp[0]
    local names = {}
    for i = 0, C.fv_safetensors_count(f) - 1 do names[#names + 1] = ffi.string(C.fv_safetensors_name(f, i)) end
    table.sort(names)
    assert.are.same({'cube_f32', 'empty_f32', 'image_u8', 'index_i64', 'layer.1.weight', 'matrix_f64', 'scalar_f32',
      'vec_f32'}, names)
    assert.is_true(C.fv_safetensors_name(f, -1) == nil)
    assert.is_true(C.fv_safetensors_name(f, #names) == nil)
    assert.are.equal(3, C.fv_safetensors_meta_count(f))
    assert.is_true(C.fv_safetensors_meta_key(f, 3) == nil)
    local out = ffi.new('fv_tensor*[1]')
    assert.are.equal(C.FV_ERR_ARGUMENT, C.fv_safetensors_get(out, f, 'nope'))
    assert.is_truthy(ffi.string(C.fv_last_error()):find("no tensor named 'nope'", 1, true))
    assert.are.equal(0, C.fv_safetensors_get(out, f, 'layer.1.weight'))
    local t = fv.wrap(out[0])
    assert.are.same({1.5, -2}, values(t))
    C.fv_safetensors_close(f)
    C.fv_safetensors_close(nil)
  end)
end)

describe('a file fovea wrote, read by the Python reference reader', function()
  it('has the same tensors and metadata', function()
    if not find_python() then
      pending(NO_PYTHON)
      return
    end
    local path = tmp('for_python.safetensors')
    local ts = {
      ['conv1.weight'] = fv.randn({2, 3, 4}, {seed = 5}),
      transposed = fv.arange(6, {dtype = 'float64'}):view(2, 3):t(),
      index = fv.tensor({-5, 0, 2 ^ 40}, {dtype = 'int64'}),
      image = fv.tensor({{0, 255}, {17, 128}}, {dtype = 'uint8'}),
      scalar = fv.tensor(0.1, {dtype = 'float64'}),
      empty = fv.zeros({2, 0}),
      ['unicode é "q"'] = fv.ones(1),
    }
    local meta = {epoch = '4', note = 'café "quoted"\nline'}
    fv.save(path, ts, meta)
    local ref = python_read(path)
    assert.are.same(meta, ref.metadata)
    local n = 0
    for name, t in pairs(ts) do
      n = n + 1
      local r = ref.tensors[name]
      assert.is_not_nil(r, name)
      assert.are.equal(t:dtype(), r.dtype, name)
      assert.are.same(t:size(), r.shape, name)
      if t:dtype() == 'int64' then
        assert.are.same(int64_strings(t), r.values, name)
      else
        assert.are.same(values(t), r.values, name)
      end
    end
    for _ in pairs(ref.tensors) do n = n - 1 end
    assert.are.equal(0, n)
  end)

  it('reads checkpoints too, under their dotted names', function()
    if not find_python() then
      pending(NO_PYTHON)
      return
    end
    local path = tmp('ckpt_for_python.safetensors')
    fv.save_checkpoint(path, {
      model = {['conv1.weight'] = fv.ones(2, 2)},
      optimizer = {state = {[3] = {exp_avg = fv.full({2}, 0.5)}}, lr = 0.01},
      rng = {seed = 0xffffffffffffffffULL, offset = 12},
      epoch = 1, step = 10,
    })
    local ref = python_read(path)
    assert.are.same({1, 1, 1, 1}, ref.tensors['model.conv1.weight'].values)
    assert.are.same({0.5, 0.5}, ref.tensors['optimizer.state.3.exp_avg'].values)
    assert.are.equal('uint64:18446744073709551615', ref.metadata['rng.seed'])
    assert.are.equal('number:0.01', ref.metadata['optimizer.lr'])
    assert.are.equal('number:10', ref.metadata['step'])
  end)
end)

---------------------------------------------------------------------------------------
-- hostile files

describe('hostile and broken files', function()
  local good_header = '{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
    .. '"b":{"dtype":"U8","shape":[4],"data_offsets":[16,20]}}'
  local good_data = ('\0\0\128\63'):rep(4) .. '\1\2\3\4'

  local function hostile(name, header, data)
    local path = tmp(name .. '.safetensors')
    write(path, build(header, data))
    return path
  end

  it('accepts the well-formed base case', function()
    local t = fv.load(hostile('good', good_header, good_data))
    assert.are.same({1, 1, 1, 1}, values(t.a))
    assert.are.same({1, 2, 3, 4}, values(t.b))
  end)

  it('reports a missing file, a directory, an empty file', function()
    local missing = tmp('does_not_exist.safetensors')
    assert_load_fails(missing, 'cannot open', 'No such file or directory')
    assert_load_fails(dir, 'is a directory')
    local empty = tmp('empty.safetensors')
    write(empty, '')
    assert_load_fails(empty, 'the file is empty')
  end)

  it('reports files truncated inside the length, the header and the data', function()
    local full = build(good_header, good_data)
    local n = #good_header
    local cuts = {
      [1] = 'shorter than the 8-byte header length',
      [4] = 'shorter than the 8-byte header length',
      [7] = 'shorter than the 8-byte header length',
      [8] = 'truncated: the header is',
      [9] = 'truncated: the header is',
      [8 + math.floor(n / 2)] = 'truncated: the header is',
      [8 + n - 1] = 'truncated: the header is',
      [8 + n] = "tensor 'a' data_offsets [0, 16] end past the data (0 bytes)",
      [8 + n + 10] = "tensor 'a' data_offsets [0, 16] end past the data (10 bytes)",
      [8 + n + 19] = "tensor 'b' data_offsets [16, 20] end past the data (19 bytes)",
    }
    for cut, fragment in pairs(cuts) do
      local path = tmp('cut_' .. cut .. '.safetensors')
      write(path, full:sub(1, cut))
      assert_load_fails(path, fragment)
    end
  end)

  it('refuses a huge header length without allocating it', function()
    for i, len in ipairs { 0xffffffffffffffffULL, 0x8000000000000000ULL, 2 ^ 40, 100000001 } do
      local path = tmp('huge_' .. i .. '.safetensors')
      write(path, u64le(len) .. good_header .. good_data)
      assert_load_fails(path, 'is over the limit of 100000000 bytes')
    end
    local path = tmp('long.safetensors')
    write(path, u64le(5000) .. good_header .. good_data)
    assert_load_fails(path, 'truncated: the header is 5000 bytes but only')
  end)

  it('checks data_offsets: bounds, order, size and overlaps', function()
    local cases = {
      { '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,400]}}', "tensor 'a' data_offsets [0, 400] end past the data (8 bytes)" },
      { '{"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,18446744073709551615]}}', 'end past the data' },
      { '{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}', 'begin after end' },
      { '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', 'hold 8 bytes, but shape 3 of F32 needs 12' },
      { '{"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}}', 'hold 8 bytes, but shape 2 of F64 needs 16' },
      { '{"a":{"dtype":"F32","shape":[],"data_offsets":[0,8]}}', 'shape scalar of F32 needs 4' },
      { '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}',
        "tensors 'a' [0, 4] and 'b' [2, 6] overlap" },
      { '{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}', 'overlap' },
      { '{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 'overlap' },
      { '{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}', 'negative data_offsets' },
      { '{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}', 'too many elements' },
      { '{"a":{"dtype":"F64","shape":[1152921504606846976],"data_offsets":[0,8]}}', 'too many elements' },
      { '{"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]}}', 'too large' },
      { '{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}}', 'too large' },
      { '{"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}}', "tensor 'a' has a negative size -1" },
    }
    for i, case in ipairs(cases) do
      assert_load_fails(hostile('offsets_' .. i, case[1], ('\0'):rep(8)), case[2])
    end
    -- empty tensors may share an offset with others, as PyTorch writes them
    local t = fv.load(hostile('empty_share', '{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},'
      .. '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', ('\0'):rep(8)))
    assert.are.same({0, 3}, t.e:size())
  end)

  it('refuses malformed JSON', function()
    local cases = {
      { '', 'header is empty' },
      { '        ', 'header is empty' },
      { '[]', 'not a JSON object' },
      { 'null', 'not a JSON object' },
      { '{', 'not valid JSON' },
      { '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}', "expected ',' or '}' at the top level" },
      { '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},}', 'expected a string' },
      { "{'a':1}", 'not valid JSON' },
      { '{"a" {"dtype":"F32"}}', "expected ':'" },
      { '{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', 'is not an integer' },
      { '{"a":{"dtype":"F32","shape":[2e0],"data_offsets":[0,8]}}', 'is not an integer' },
      { '{"a":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}}', 'leading zero' },
      { '{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', 'expected an integer' },
      { '{"a":{"dtype":"F32","shape":[2,],"data_offsets":[0,8]}}', 'expected an integer' },
      { '{"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}', "expected '[' (the shape)" },
      { '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}', 'data_offsets holds two integers' },
      { '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}', 'data_offsets holds two integers' },
      { '{"a":{"dtype":F32,"shape":[2],"data_offsets":[0,8]}}', 'expected a string' },
      { '{"a":[1,2]}', "tensor 'a': expected an object" },
      { '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x', 'trailing bytes' },
      { '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}\0', 'trailing bytes' },
      { '{"a\\q":{}}', "bad escape '\\q'" },
      { '{"a\\u12":{}}', 'short \\u escape' },
      { '{"a\\u12zz":{}}', 'bad \\u escape' },
      { '{"a\\udc00":{}}', 'lone low surrogate' },
      { '{"a\\ud800x":{}}', 'not followed by a low one' },
      { '{"a\\u0000b":{}}', 'holds \\u0000' },
      { '{"a\tb":{}}', 'control character 0x09' },
      { '{"\255":{}}', 'not valid UTF-8' },
      { '{"\192\128":{}}', 'not valid UTF-8' },
      { '{"\237\160\128":{}}', 'not valid UTF-8' },
      { '{"abc', 'has no closing quote' },
      { '{"abc\\', 'has no closing quote' },
      { '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":1}}', "metadata value of 'k' is not a string" },
      { '{"__metadata__":[]}', '"__metadata__" is not an object' },
      { '{"__metadata__":{},"__metadata__":{}}', '"__metadata__" twice' },
      { '{"__metadata__":{"k":"a","k":"b"}}', "metadata key 'k' appears twice" },
    }
    for i, case in ipairs(cases) do
      assert_load_fails(hostile('json_' .. i, case[1], ('\0'):rep(8)), case[2])
    end
  end)

  it('refuses unknown and unsupported dtypes, missing and repeated keys, duplicate names', function()
    local cases = {
      { '{"a":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}}', "tensor 'a' has an unknown dtype 'F99'" },
      { '{"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}', "unknown dtype 'f32'" },
      { '{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}', "tensor 'a': dtype F16 not supported" },
      { '{"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}', 'dtype BF16 not supported' },
      { '{"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}', 'dtype I32 not supported' },
      { '{"a":{"dtype":"F4","shape":[16],"data_offsets":[0,8]}}', 'dtype F4 not supported' },
      { '{"a":{"shape":[2],"data_offsets":[0,8]}}', "tensor 'a' has no \"dtype\"" },
      { '{"a":{"dtype":"F32","data_offsets":[0,8]}}', "tensor 'a' has no \"shape\"" },
      { '{"a":{"dtype":"F32","shape":[2]}}', "tensor 'a' has no \"data_offsets\"" },
      { '{"a":{}}', "tensor 'a' has no \"dtype\"" },
      { '{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', "has the key 'dtype' twice" },
      { '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}}', "unknown key 'extra'" },
      { '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        "tensor name 'a' appears twice" },
      { '{"w":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}', 'has 9 dimensions; fovea supports at most 8' },
    }
    for i, case in ipairs(cases) do
      assert_load_fails(hostile('schema_' .. i, case[1], ('\0'):rep(8)), case[2])
    end
  end)

  it('decodes \\u escapes and surrogate pairs in names', function()
    local t = fv.load(hostile('escapes', '{"caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\/":'
      .. '{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}   ', '\7'))
    assert.are.same({7}, values(t['café 😀 "q" /']))
  end)

  it('survives random corruption of a valid file without crashing', function()
    local full = build(good_header, good_data)
    local path = tmp('fuzz.safetensors')
    local state = 12345
    local function rand(n)
      state = (state * 1103515245 + 12345) % 2147483648
      return state % n
    end
    local failures = 0
    for _ = 1, 300 do
      local bytes = { full:byte(1, -1) }
      for _ = 1, 1 + rand(4) do bytes[1 + rand(#bytes)] = rand(256) end
      write(path, string.char(unpack(bytes)):sub(1, #full - rand(3)))
      local ok, err = pcall(fv.load, path)
      if not ok then
        failures = failures + 1
        assert.is_truthy(tostring(err):find("load '" .. path .. "'", 1, true), tostring(err))
      end
    end
    assert.is_true(failures > 0)
  end)
end)

---------------------------------------------------------------------------------------
-- checkpoints

local function sample_state(seed)
  return {
    model = {
      ['conv1.weight'] = fv.randn({4, 3, 3, 3}, {seed = seed}),
      ['conv1.bias'] = fv.randn({4}, {seed = seed + 1}),
      ['fc.weight'] = fv.randn({10, 4}, {seed = seed + 2}):t(),   -- a view
      ['bn.num_batches_tracked'] = fv.tensor(17, {dtype = 'int64'}),
    },
    optimizer = {
      name = 'adam',
      state = {
        [1] = {step = 12, exp_avg = fv.full({4, 3, 3, 3}, 0.25), exp_avg_sq = fv.full({4, 3, 3, 3}, 0.125)},
        [3] = {step = 12, exp_avg = fv.zeros(4), exp_avg_sq = fv.ones(4)},
      },
      param_groups = {
        {lr = 0.001, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0, amsgrad = false, params = {1, 2, 3}},
      },
      empty = {},
    },
    rng = {seed = 0xfffffffffffffffeULL, offset = 2 ^ 64},
    epoch = 7,
    step = 123456,
  }
end

local function assert_same_state(a, b, path)
  path = path or 'state'
  assert.are.equal(type(a), type(b), path)
  if fv.is_tensor(a) then
    assert.is_true(fv.is_tensor(b), path)
    assert_same_tensor(a:contiguous(), b, path)
  elseif type(a) == 'table' then
    for k, v in pairs(a) do assert_same_state(v, b[k], path .. '[' .. tostring(k) .. ']') end
    for k in pairs(b) do assert.is_not_nil(a[k], path .. ': unexpected key ' .. tostring(k)) end
  elseif type(a) == 'cdata' then
    assert.is_true(ffi.istype(ffi.typeof(a), b), path)
    assert.is_true(a == b, path)
  elseif a ~= a then
    assert.is_true(b ~= b, path)
  else
    assert.are.equal(a, b, path)
    if type(a) == 'number' then assert.are.equal(is_negative_zero(a), is_negative_zero(b), path) end
  end
end

describe('checkpoints', function()
  it('round-trip model, optimizer state, rng, epoch and step', function()
    local path = tmp('ckpt.safetensors')
    local state = sample_state(1)
    fv.save_checkpoint(path, state)
    local back = fv.load_checkpoint(path)
    assert_same_state(state, back)
    assert.are.equal('uint64_t', tostring(ffi.typeof(back.rng.seed)):match('ctype<(.-)>'))
    assert.is_true(back.rng.seed == 0xfffffffffffffffeULL)
    assert.are.equal(2 ^ 64, back.rng.offset)
    assert.are.equal(7, back.epoch)
    assert.are.equal(123456, back.step)
    assert.are.equal(false, back.optimizer.param_groups[1].amsgrad)
    assert.are.same({0.9, 0.999}, back.optimizer.param_groups[1].betas)
    assert.are.same({}, back.optimizer.empty)
  end)

  it('uses dotted names and tagged metadata that other readers can see', function()
    local path = tmp('layout.safetensors')
    fv.save_checkpoint(path, sample_state(2))
    local ts, meta = fv.load(path)
    assert.is_not_nil(ts['model.conv1.weight'])
    assert.is_not_nil(ts['optimizer.state.3.exp_avg'])
    assert.are.equal('1', meta['fovea:checkpoint'])
    assert.are.equal('number:7', meta.epoch)
    assert.are.equal('number:123456', meta.step)
    assert.are.equal('uint64:18446744073709551614', meta['rng.seed'])
    assert.are.equal('number:18446744073709551616', meta['rng.offset'])
    assert.are.equal('string:adam', meta['optimizer.name'])
    assert.are.equal('boolean:false', meta['optimizer.param_groups.1.amsgrad'])
    assert.are.equal('table:', meta['optimizer.empty'])
  end)

  it('keeps key types, awkward keys and awkward numbers', function()
    local path = tmp('keys.safetensors')
    local state = {
      model = {},
      weird = {
        ['3'] = 'string three', [3] = 'number three', [-2] = 'minus two', ['-2'] = 's',
        ['a.b'] = 1, ['%41'] = 2, [''] = 3, ['x:y'] = 4, ['%'] = 5,
        ['é ✓'] = {deep = {deeper = {deepest = fv.ones(1)}}},
      },
      numbers = {0.1, -0.0, 1e-300, 1 / 3, math.huge, -math.huge, 0 / 0, 2 ^ 53 + 2, -(2 ^ 63), 5e-324},
      ints = {a = -5LL, b = 0x7fffffffffffffffLL, c = -0x7fffffffffffffffLL - 1, d = 0ULL},
      text = {empty = '', multi = 'a\nb "c" \\ d'},
      flags = {t = true, f = false},
    }
    fv.save_checkpoint(path, state)
    local back = fv.load_checkpoint(path)
    assert_same_state(state, back)
    assert.are.equal('string three', back.weird['3'])
    assert.are.equal('number three', back.weird[3])
    assert.are.same({}, back.model)
  end)

  it('refuses what it cannot store, with the path of the culprit', function()
    local path = tmp('bad.safetensors')
    local err = error_of(fv.save_checkpoint, path, {optimizer = {hook = print}})
    assert.is_truthy(err:find('state.optimizer.hook is a function', 1, true), err)
    err = error_of(fv.save_checkpoint, path, {model = {w = 3}})
    assert.is_truthy(err:find('state.model["w"] is a number, expected a tensor', 1, true), err)
    err = error_of(fv.save_checkpoint, path, {a = {[true] = 1}})
    assert.is_truthy(err:find('keys must be strings or integers', 1, true), err)
    err = error_of(fv.save_checkpoint, path, {a = {[1.5] = 1}})
    assert.is_truthy(err:find('is not an integer or a string', 1, true), err)
    local cyc = {}
    cyc.self = cyc
    err = error_of(fv.save_checkpoint, path, {opt = cyc})
    assert.is_truthy(err:find('refers back to a table', 1, true), err)
    err = error_of(fv.save_checkpoint, path, 'state')
    assert.is_truthy(err:find('state must be a table', 1, true), err)
    assert.is_false(exists(path))
  end)

  it('refuses files that are not fovea checkpoints', function()
    local path = tmp('plain.safetensors')
    fv.save(path, {x = fv.ones(1)})
    local err = error_of(fv.load_checkpoint, path)
    assert.is_truthy(err:find('not a fovea checkpoint', 1, true), err)
    fv.save(path, {x = fv.ones(1)}, {['fovea:checkpoint'] = '1', epoch = 'garbage'})
    err = error_of(fv.load_checkpoint, path)
    assert.is_truthy(err:find('not a tagged scalar', 1, true), err)
    fv.save(path, {['a.b'] = fv.ones(1)}, {['fovea:checkpoint'] = '1', a = 'number:1'})
    err = error_of(fv.load_checkpoint, path)
    assert.is_truthy(err:find('entry "a" is given twice or clashes with another', 1, true), err)
    fv.save(path, {}, {['fovea:checkpoint'] = '1', a = 'number:1', ['a.b'] = 'number:2'})
    err = error_of(fv.load_checkpoint, path)
    assert.is_truthy(err:find('entry "a.b" runs through a value that is not a table', 1, true), err)
    fv.save(path, {}, {['fovea:checkpoint'] = '1', ['a.%zz'] = 'number:2'})
    err = error_of(fv.load_checkpoint, path)
    assert.is_truthy(err:find('badly escaped key', 1, true), err)
    fv.save(path, {}, {['fovea:checkpoint'] = '2'})
    err = error_of(fv.load_checkpoint, path)
    assert.is_truthy(err:find('checkpoint version "2"', 1, true), err)
    assert_load_fails(tmp('missing_ckpt.safetensors'), 'No such file')
    err = error_of(fv.load_checkpoint, tmp('missing_ckpt.safetensors'))
    assert.is_truthy(err:find("load '" .. tmp('missing_ckpt.safetensors') .. "'", 1, true), err)
  end)
end)

describe('atomic writes', function()
  -- Runs a child LuaJIT that saves a big checkpoint to path and is made to _exit(1)
  -- after `bytes` bytes of the temporary file (the writer's test hook).
  local function crash_saving(path, bytes)
    local script = tmp('crash_child.lua')
    write(script, ([[
      local fv = require 'fovea'
      local state = {
        model = {big = fv.full({256, 1024}, 9), other = fv.full({1000}, 8)},
        optimizer = {lr = 99, state = {[1] = {exp_avg = fv.full({256, 1024}, 7)}}},
        rng = {seed = 1, offset = 2}, epoch = 99, step = 99,
      }
      fv.save_checkpoint(%q, state)
      io.write('finished')
    ]]):format(path))
    local p = io.popen(('FOVEA_TEST_CRASH_AFTER_BYTES=%d luajit "%s" 2>&1; echo " exit=$?"'):format(bytes, script))
    local out = p:read('*a')
    p:close()
    return out
  end

  it('keeps the previous checkpoint when a save dies part way', function()
    local path = tmp('atomic.safetensors')
    local state = sample_state(3)
    fv.save_checkpoint(path, state)
    local before = read(path)
    local header_len = 0
    for i = 8, 1, -1 do header_len = header_len * 256 + before:byte(i) end
    -- inside the length, inside the header, inside the data, near the end
    for _, bytes in ipairs { 4, 8 + math.floor(header_len / 2), 200000, 2000000 } do
      local out = crash_saving(path, bytes)
      assert.is_falsy(out:find('finished', 1, true), out)
      assert.is_truthy(out:find('exit=1', 1, true), out)
      -- the half-written temporary file is there, beside the intact checkpoint
      local leftovers = {}
      for _, f in ipairs(listdir(dir)) do
        if f:find('^atomic%.safetensors%.tmp%.%d+$') then leftovers[#leftovers + 1] = f end
      end
      assert.are.equal(1, #leftovers)
      local tmpfile = read(tmp(leftovers[1]))
      assert.is_true(#tmpfile <= bytes)
      os.remove(tmp(leftovers[1]))
      assert.are.equal(before, read(path))
      assert_same_state(state, fv.load_checkpoint(path))
    end
    -- without the hook the same child finishes and replaces the file
    local script = tmp('crash_child.lua')
    local p = io.popen(('luajit "%s" 2>&1'):format(script))
    local out = p:read('*a')
    p:close()
    assert.are.equal('finished', out)
    local now = fv.load_checkpoint(path)
    assert.are.equal(99, now.epoch)
    assert.are.same({256, 1024}, now.model.big:size())
    assert.are.equal(9 * 256 * 1024, now.model.big:sum():item())
    for _, f in ipairs(listdir(dir)) do assert.is_falsy(f:find('%.tmp%.'), f) end
  end)

  it('replaces an existing file in one step when the save succeeds', function()
    local path = tmp('replace.safetensors')
    fv.save(path, {x = fv.ones(3)}, {v = '1'})
    fv.save(path, {y = fv.zeros(2)}, {v = '2'})
    local t, m = fv.load(path)
    assert.is_nil(t.x)
    assert.are.same({0, 0}, values(t.y))
    assert.are.equal('2', m.v)
    for _, f in ipairs(listdir(dir)) do assert.is_falsy(f:find('^replace.*%.tmp%.'), f) end
  end)
end)
