-- datasets.lua: image data sets (fv.data.datasets). Each has :size(), :get(i) -> image
-- (H x W x 3 uint8), label (class number from 1), :label(i) without decoding, and
-- .classes (names by class number). Data sets of image files also have :path(i) and
-- :decode_steps() (what turns the decoded file into the image :get returns), which let
-- fv.data.Loader decode and transform them in C threads.
--
--   local ds = fv.data.datasets.MESSIDOR('/data/messidor', {task = 'referable'})
--   local img, label = ds:get(1)
--   local cov = fv.data.datasets.COVID19('/data/COVID-19 Radiography Database')
--   local any = fv.data.datasets.ImageFolder('/data/cats_vs_dogs')
--   local idx = fv.data.datasets.CSV('/data/index.csv')   -- columns path,label
local clib = require 'fovea.clib'
local image = require 'fovea.image'
local T = require 'fovea.data.transforms'
local fs = require 'fovea.data.fs'
local csv = require 'fovea.data.csv'

local C, raise = clib.C, clib.raise
local D = {}

local function default_warn(msg) io.stderr:write('fovea: warning: ', msg, '\n') end

---------------------------------------------------------------------------------------
-- the common base: a list of items {path = ..., label = ...}

local Dataset = {}
Dataset.__index = Dataset
D.Dataset = Dataset

-- A data set of image files; items: { {path =, label =, ...}, ... }; channels: what
-- :get returns (3: RGB; 'gray3': gray made from the file, replicated to 3 channels).
function D.from_items(items, classes, opts)
  opts = opts or {}
  return setmetatable({ items = items, classes = classes, channels = opts.channels or 3, name = opts.name or 'files' },
    Dataset)
end

function Dataset:size() return #self.items end

local function check_index(self, i)
  if type(i) ~= 'number' or i ~= math.floor(i) or i < 1 or i > #self.items then
    raise(('fovea: %s: index %s out of range 1..%d'):format(self.name, tostring(i), #self.items))
  end
  return self.items[i]
end

function Dataset:label(i) return check_index(self, i).label end
function Dataset:path(i) return check_index(self, i).path end
function Dataset:item(i) return check_index(self, i) end

-- The labels of all items, in order.
function Dataset:labels()
  local out = {}
  for i, item in ipairs(self.items) do out[i] = item.label end
  return out
end

-- C steps (slot -1) from a decoded file to the image :get returns.
function Dataset:decode_steps()
  if self.channels == 'gray3' then
    return { { kind = C.FV_STEP_CHANNELS, i = { 1 } }, { kind = C.FV_STEP_CHANNELS, i = { 3 } } }
  end
  return { { kind = C.FV_STEP_CHANNELS, i = { self.channels } } }
end

-- Image i (H x W x C uint8) and its label.
function Dataset:get(i)
  local item = check_index(self, i)
  local img = image.load(item.path)
  return T.apply_steps(img, self:decode_steps(), {}), item.label
end

-- Number of items per class: counts[k] for class k.
function Dataset:class_counts()
  local counts = {}
  for k = 1, #(self.classes or {}) do counts[k] = 0 end
  for _, item in ipairs(self.items) do counts[item.label] = (counts[item.label] or 0) + 1 end
  return counts
end

-- The items at the given indices, as a data set of their own.
function Dataset:subset(indices) return D.Subset(self, indices) end

function Dataset:__tostring()
  return ('fovea.data.%s: %d images, classes %s'):format(self.name, #self.items, table.concat(self.classes or {}, ', '))
end

---------------------------------------------------------------------------------------
-- Subset: a view of another data set (any with :size, :get, :label)

local Subset = {}
Subset.__index = function(self, k)
  local m = Subset[k]
  if m ~= nil then return m end
  if k == 'path' and self.parent.path then return Subset.path_ end
  if k == 'decode_steps' and self.parent.decode_steps then return Subset.decode_steps_ end
  if k == 'classes' or k == 'channels' then return self.parent[k] end
  return nil
end

function D.Subset(parent, indices)
  for _, i in ipairs(indices) do
    if type(i) ~= 'number' or i < 1 or i > parent:size() then
      raise(('fovea: Subset: index %s out of range 1..%d'):format(tostring(i), parent:size()))
    end
  end
  return setmetatable({ parent = parent, indices = indices, name = 'Subset' }, Subset)
end

function Subset:size() return #self.indices end
function Subset:get(i) return self.parent:get(self.indices[i]) end
function Subset:label(i) return self.parent:label(self.indices[i]) end
function Subset:path_(i) return self.parent:path(self.indices[i]) end
function Subset:decode_steps_() return self.parent:decode_steps() end
function Subset:subset(indices) return D.Subset(self, indices) end
function Subset:labels()
  local out = {}
  for i = 1, #self.indices do out[i] = self:label(i) end
  return out
end

---------------------------------------------------------------------------------------
-- helpers

local function image_file(name, extensions)
  local ext = fs.extension(name)
  for _, e in ipairs(extensions) do if ext == e then return true end end
  return false
end

local default_extensions = { 'png', 'tif', 'tiff' }

-- Files of dir with an image extension, sorted by name, as full paths.
local function image_files(dir, extensions)
  local out = {}
  for _, e in ipairs(fs.list(dir, { kind = 'file' })) do
    if image_file(e.name, extensions or default_extensions) then out[#out + 1] = fs.join(dir, e.name) end
  end
  return out
end

-- The entry of dir whose name equals name ignoring case, or nil.
local function find_entry(dir, name, kind)
  local lower = name:lower()
  for _, e in ipairs(fs.list(dir, kind and { kind = kind } or nil)) do
    if e.name:lower() == lower then return e.name end
  end
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

---------------------------------------------------------------------------------------
-- MESSIDOR

local messidor_tasks = {
  ['normal-vs-abnormal'] = { classes = { 'normal', 'abnormal' }, label = function(g) return g == 0 and 1 or 2 end },
  referable = { classes = { 'non-referable', 'referable' }, label = function(g) return g <= 1 and 1 or 2 end },
  grade = { classes = { 'R0', 'R1', 'R2', 'R3' }, label = function(g) return g + 1 end },
  edema = { classes = { 'risk 0', 'risk 1', 'risk 2' }, label = function(_, e) return e + 1 end },
}
D.messidor_tasks = messidor_tasks

-- The text of an annotation sheet as CSV: a .csv file as it is, a .xls through
-- xls2csv (Debian's catdoc).
local function annotation_text(path, opts)
  if fs.extension(path) == 'csv' then return assert(fs.read(path)) end
  local tool = opts.xls2csv or 'xls2csv'
  local p = io.popen(('%s -q3 %s 2>&1; echo "exit:$?"'):format(tool, shell_quote(path)))
  local out = p:read('*a')
  p:close()
  local status = tonumber(out:match('exit:(%d+)%s*$'))
  out = out:gsub('exit:%d+%s*$', '')
  if status ~= 0 then
    if status == 127 then
      raise(("fovea: MESSIDOR: cannot read '%s': %s is not installed (apt-get install catdoc, or `make deps`; "
        .. 'or save the sheet as a .csv next to it)'):format(path, tool))
    end
    raise(("fovea: MESSIDOR: %s failed on '%s' (exit %s): %s"):format(tool, path, tostring(status), out:sub(1, 300)))
  end
  return out
end

-- A record's field whose trimmed, lower-case header is name.
local function field(rec, header, name)
  for _, h in ipairs(header) do
    if h:lower() == name then return rec[h] end
  end
end

local function annotation_files(dir)
  local found, csvs = {}, {}
  for _, e in ipairs(fs.list(dir, { kind = 'file' })) do
    local lower = e.name:lower()
    if lower:match('^annotation.*%.csv$') then csvs[lower:gsub('%.csv$', '')] = true end
  end
  for _, e in ipairs(fs.list(dir, { kind = 'file' })) do
    local lower = e.name:lower()
    if lower:match('^annotation.*%.csv$') then
      found[#found + 1] = fs.join(dir, e.name)
    elseif lower:match('^annotation.*%.xlsx?$') and not csvs[lower:gsub('%.xlsx?$', '')] then
      found[#found + 1] = fs.join(dir, e.name) -- a .csv of the same name wins
    end
  end
  return found
end

-- MESSIDOR as distributed: root holds Base11 .. Base34 (each with its TIFF images and
-- Annotation_BaseXY.xls), or is one such folder. opts.task: 'normal-vs-abnormal' (default: grade
-- 0 vs 1-3), 'referable' (0-1 vs 2-3), 'grade' (4 classes) or 'edema' (risk of macular
-- edema, 3 classes). Annotation sheets are read as .csv when one of the same name is
-- there, else through xls2csv (opts.xls2csv names the command). Images listed twice
-- (MESSIDOR has a few across bases) are kept once, at their first place, with a
-- warning through opts.warn (default: stderr); ds.duplicates lists them.
function D.MESSIDOR(root, opts)
  opts = opts or {}
  local task = messidor_tasks[opts.task or 'normal-vs-abnormal']
  if not task then
    raise('fovea: MESSIDOR: unknown task ' .. tostring(opts.task) .. ' (normal-vs-abnormal, referable, grade, edema)')
  end
  if not fs.is_dir(root) then raise(("fovea: MESSIDOR: '%s' is not a folder"):format(root)) end
  local warn = opts.warn or default_warn
  local bases = {}
  for _, e in ipairs(fs.list(root, { kind = 'dir' })) do
    if e.name:lower():match('^base%d+$') then bases[#bases + 1] = fs.join(root, e.name) end
  end
  if #bases == 0 then bases = { root } end
  local items, seen, duplicates, missing = {}, {}, {}, {}
  for _, base in ipairs(bases) do
    local sheets = annotation_files(base)
    if #sheets == 0 then
      raise(("fovea: MESSIDOR: no annotation sheet (Annotation_*.xls or .csv) in '%s'"):format(base))
    end
    local files = {}
    for _, e in ipairs(fs.list(base, { kind = 'file' })) do files[e.name:lower()] = e.name end
    for _, sheet in ipairs(sheets) do
      local records, header = csv.records(annotation_text(sheet, opts))
      local has_name = false
      for _, h in ipairs(header) do has_name = has_name or h:lower() == 'image name' end
      if not has_name then
        raise(("fovea: MESSIDOR: '%s' has no 'Image name' column (columns: %s)")
          :format(sheet, table.concat(header, ', ')))
      end
      for r, rec in ipairs(records) do
        local name = field(rec, header, 'image name')
        if name and name:match('%S') then
          name = name:match('^%s*(.-)%s*$')
          local grade = tonumber(field(rec, header, 'retinopathy grade'))
          local edema = tonumber(field(rec, header, 'risk of macular edema'))
          if not grade or grade < 0 or grade > 3 or grade ~= math.floor(grade) or not edema or edema < 0 or edema > 2
              or edema ~= math.floor(edema) then
            raise(("fovea: MESSIDOR: '%s' row %d (%s): retinopathy grade %s and edema risk %s (expected 0..3 and 0..2)")
              :format(sheet, r + 1, name, tostring(field(rec, header, 'retinopathy grade')),
                tostring(field(rec, header, 'risk of macular edema'))))
          end
          if seen[name:lower()] then
            duplicates[#duplicates + 1] = name
          else
            seen[name:lower()] = true
            local actual = files[name:lower()]
            if not actual then
              missing[#missing + 1] = fs.join(base, name)
            else
              items[#items + 1] = {
                path = fs.join(base, actual), label = task.label(grade, edema), grade = grade, edema = edema,
                department = field(rec, header, 'ophthalmologic department'), base = base, name = name,
              }
            end
          end
        end
      end
    end
  end
  if #missing > 0 then
    raise(('fovea: MESSIDOR: %d annotated image%s missing: %s%s'):format(#missing, #missing > 1 and 's are' or ' is',
      table.concat(missing, ', ', 1, math.min(#missing, 5)), #missing > 5 and ', ...' or ''))
  end
  if #duplicates > 0 then
    warn(('MESSIDOR: %d image%s annotated more than once, kept once: %s'):format(#duplicates,
      #duplicates > 1 and 's' or '', table.concat(duplicates, ', ')))
  end
  local ds = D.from_items(items, task.classes, { name = 'MESSIDOR' })
  ds.duplicates = duplicates
  ds.task = opts.task or 'normal-vs-abnormal'
  return ds
end

---------------------------------------------------------------------------------------
-- COVID-19 Radiography Database

local covid_layouts = {
  { version = 1, classes = { 'COVID-19', 'NORMAL', 'Viral Pneumonia' }, sub = nil },
  { version = 2, classes = { 'COVID', 'Normal', 'Lung_Opacity', 'Viral Pneumonia' }, sub = 'images' },
}

-- The layout found in dir: version 2 when COVID/images is there, 1 when COVID-19 (or
-- NORMAL) holds images directly.
local function covid_layout(dir, version)
  for _, layout in ipairs(covid_layouts) do
    if not version or version == layout.version then
      local first = find_entry(dir, layout.classes[1], 'dir')
      local ok = first ~= nil
      if ok and layout.sub then ok = find_entry(fs.join(dir, first), layout.sub, 'dir') ~= nil end
      if ok then return layout end
    end
  end
end

-- The COVID-19 Radiography Database: version 1 (the paper's 2,905 images) as
-- {COVID-19, NORMAL, Viral Pneumonia}/*.png, or later versions as {COVID, Normal,
-- Lung_Opacity, Viral Pneumonia}/images/*.png (masks/ ignored). root may also be the
-- folder holding the database's folder. Images load as gray replicated to 3 channels.
-- opts.version forces a layout; opts.classes keeps some classes, in that order (e.g.
-- {'COVID', 'Normal', 'Viral Pneumonia'} for the paper's three from version 2).
function D.COVID19(root, opts)
  opts = opts or {}
  if not fs.is_dir(root) then raise(("fovea: COVID19: '%s' is not a folder"):format(root)) end
  local dir, layout = root, covid_layout(root, opts.version)
  if not layout then
    for _, e in ipairs(fs.list(root, { kind = 'dir' })) do
      layout = covid_layout(fs.join(root, e.name), opts.version)
      if layout then
        dir = fs.join(root, e.name)
        break
      end
    end
  end
  if not layout then
    raise(("fovea: COVID19: '%s' holds neither COVID-19/, NORMAL/, Viral Pneumonia/ (version 1) nor "
      .. 'COVID/images/, Normal/images/, ... (later versions)'):format(root))
  end
  local classes = opts.classes or layout.classes
  local items = {}
  for k, class in ipairs(classes) do
    local name = find_entry(dir, class, 'dir')
    if not name then raise(("fovea: COVID19: class folder '%s' is missing in '%s'"):format(class, dir)) end
    local folder = fs.join(dir, name)
    if layout.sub then folder = fs.join(folder, find_entry(folder, layout.sub, 'dir') or layout.sub) end
    for _, path in ipairs(image_files(folder, { 'png' })) do items[#items + 1] = { path = path, label = k } end
  end
  local ds = D.from_items(items, classes, { channels = 'gray3', name = 'COVID19' })
  ds.version = layout.version
  return ds
end

---------------------------------------------------------------------------------------
-- generic layouts

-- One folder per class under root (classes sorted by name, or opts.classes in that
-- order); images with opts.extensions (default png, tif, tiff). opts.channels: 3
-- (default), 1, or 'gray3'.
function D.ImageFolder(root, opts)
  opts = opts or {}
  if not fs.is_dir(root) then raise(("fovea: ImageFolder: '%s' is not a folder"):format(root)) end
  local classes = opts.classes
  if not classes then
    classes = {}
    for _, e in ipairs(fs.list(root, { kind = 'dir' })) do classes[#classes + 1] = e.name end
  end
  local items = {}
  for k, class in ipairs(classes) do
    local dir = fs.join(root, class)
    if not fs.is_dir(dir) then raise(("fovea: ImageFolder: class folder '%s' is missing"):format(dir)) end
    for _, path in ipairs(image_files(dir, opts.extensions)) do items[#items + 1] = { path = path, label = k } end
  end
  return D.from_items(items, classes, { channels = opts.channels, name = 'ImageFolder' })
end

local function is_integer_text(s) return s:match('^%s*%-?%d+%s*$') ~= nil end

-- Labels from text: class numbers (counted from opts.label_base, default 0) when every
-- label is an integer, else class names (sorted, or opts.classes in that order).
local function resolve_labels(raw, opts, where)
  local numeric = #raw > 0
  for _, v in ipairs(raw) do if not is_integer_text(v) then numeric = false break end end
  local classes, labels = opts.classes, {}
  if numeric then
    local base = opts.label_base or 0
    local top = 0
    for r, v in ipairs(raw) do
      labels[r] = tonumber(v) - base + 1
      if labels[r] < 1 then
        raise(('fovea: %s: row %d has label %s, below label_base %d'):format(where, r + 1, v, base))
      end
      top = math.max(top, labels[r])
    end
    if not classes then
      classes = {}
      for k = 1, top do classes[k] = tostring(k - 1 + base) end
    elseif top > #classes then
      raise(('fovea: %s: label %d is past the %d classes given'):format(where, top - 1 + base, #classes))
    end
  else
    if not classes then
      local set = {}
      classes = {}
      for _, v in ipairs(raw) do if not set[v] then set[v], classes[#classes + 1] = true, v end end
      table.sort(classes)
    end
    local number = {}
    for k, name in ipairs(classes) do number[name] = k end
    for r, v in ipairs(raw) do
      labels[r] = number[v]
      if not labels[r] then
        raise(("fovea: %s: row %d has label '%s', not one of the classes"):format(where, r + 1, v))
      end
    end
  end
  return labels, classes
end

-- An index file with a header and columns path,label (opts.path_column,
-- opts.label_column); paths relative to opts.root (default: the CSV's folder). Labels
-- are class names or class numbers (see resolve_labels: numbers count from
-- opts.label_base, default 0). opts.channels as ImageFolder's.
function D.CSV(path, opts)
  opts = opts or {}
  local text, err = fs.read(path)
  if not text then raise(("fovea: CSV: cannot read '%s': %s"):format(path, tostring(err))) end
  local records, header = csv.records(text)
  local pcol, lcol = opts.path_column or 'path', opts.label_column or 'label'
  local has = {}
  for _, h in ipairs(header) do has[h] = true end
  if not has[pcol] or not has[lcol] then
    raise(("fovea: CSV: '%s' needs columns '%s' and '%s' (header: %s)")
      :format(path, pcol, lcol, table.concat(header, ',')))
  end
  local root = opts.root or fs.dirname(path)
  local raw, items = {}, {}
  for r, rec in ipairs(records) do
    raw[r] = (rec[lcol] or ''):match('^%s*(.-)%s*$')
    items[r] = { path = fs.join(root, rec[pcol] or '') }
  end
  local labels, classes = resolve_labels(raw, opts, "CSV '" .. path .. "'")
  for r, item in ipairs(items) do item.label = labels[r] end
  return D.from_items(items, classes, { channels = opts.channels, name = 'CSV' })
end

-- A plain list of files: entries are paths (label 1) or {path, label} / {path = ,
-- label = } with labels numbers from 1 or class names (opts.classes orders names).
function D.Files(list, opts)
  opts = opts or {}
  local items, raw, named = {}, {}, false
  for r, e in ipairs(list) do
    local p, l
    if type(e) == 'string' then p, l = e, 1 else p, l = e.path or e[1], e.label or e[2] or 1 end
    if type(p) ~= 'string' then raise('fovea: Files: entry ' .. r .. ' has no path') end
    items[r], raw[r] = { path = p }, l
    if type(l) == 'string' then named = true end
  end
  local classes = opts.classes
  if named then
    local labels
    local text = {}
    for r, l in ipairs(raw) do text[r] = tostring(l) end
    labels, classes = resolve_labels(text, { classes = classes, label_base = 1 }, 'Files')
    for r, item in ipairs(items) do item.label = labels[r] end
  else
    local top = 0
    for r, item in ipairs(items) do
      item.label = raw[r]
      top = math.max(top, raw[r])
    end
    if not classes then
      classes = {}
      for k = 1, top do classes[k] = tostring(k) end
    end
  end
  return D.from_items(items, classes, { channels = opts.channels, name = 'Files' })
end

return D
