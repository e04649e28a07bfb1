-- build_spec.lua: the public headers stay readable by ffi.cdef (no preprocessor lines),
-- and `make install` gives a fovea that `require` finds from any directory.
local helpers = require 'spec.helpers'
local read = helpers.read

describe('build', function()
  it('keeps the public header free of preprocessor lines', function()
    for _, header in ipairs { 'core/fovea.h', 'core/fovea_optim.h', 'core/fovea_io.h', 'core/fovea_data.h' } do
      local text = read(header)
      assert.is_nil(text:match('\n%s*#'), header .. ' has a preprocessor line')
      assert.is_nil(text:match('^%s*#'), header .. ' starts with a preprocessor line')
    end
  end)

  it('installs into a prefix and loads from another directory', function()
    local prefix = os.tmpname()
    os.remove(prefix)
    local ok = os.execute(('make -s install PREFIX=%s >/dev/null 2>&1'):format(prefix))
    assert.is_true(ok == 0 or ok == true)
    local cmd = ('cd / && LUA_PATH="%s/share/lua/5.1/?.lua;%s/share/lua/5.1/?/init.lua;;" FOVEA_LIB= '
      .. 'luajit -e "local fv = require \'fovea\'; io.write(fv.ones(2, 3):sum():item())"'):format(prefix, prefix)
    local p = io.popen(cmd)
    local out = p:read('*a')
    p:close()
    os.execute('rm -rf ' .. prefix)
    assert.are.equal('6', out)
  end)
end)
