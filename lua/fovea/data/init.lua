-- fovea.data: data sets, transforms, splits and the threaded loader (fv.data).
--   fv.data.datasets     MESSIDOR, COVID19, ImageFolder, CSV, Files, Subset
--   fv.data.transforms   Compose, Resize, CLAHE, RandomFlips, RandomRotation, ToTensor,
--                        Normalize, paper_train, paper_eval
--   fv.data.splits       train_test, repeated, kfold (stratified, seeded)
--   fv.data.synthetic    a fundus-like tiny-lesion data set generated from a seed
--   fv.data.Loader       batches, decoded and augmented in C threads
local M = {}
M.transforms = require 'fovea.data.transforms'
M.datasets = require 'fovea.data.datasets'
M.splits = require 'fovea.data.splits'
M.synthetic = require 'fovea.data.synthetic'
M.Loader = require('fovea.data.loader').Loader
M.csv = require 'fovea.data.csv'
M.fs = require 'fovea.data.fs'
return M
