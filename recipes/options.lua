-- recipes/options.lua: the command-line options the classification recipes share, with
-- their defaults and help lines (fv.cli format). Options left at 0 take the recipe's
-- defaults for real data or for the built-in synthetic set (recipes/job.lua).
return {
  { 'model', 'dual', 'model name (models.list(): dual, resnet18, shufflenetv2, se, cbam, nonlocal, ccnet)' },
  { 'backbone', 'resnet18', 'resnet18 or shufflenetv2 (dual model)' },
  { 'variant', 'nam+db+nvcf', 'baseline, nam, nam+db or nam+db+nvcf (dual model)' },
  { 'nam_at', 1, 'NAM placement: 0 (stem) .. 4 (e4)' },
  { 'size', 0, 'image size (0: 386 for real data, 160 for the built-in set)' },
  { 'epochs', 0, 'training epochs (0: 30 for real data, 10 for the built-in set)' },
  { 'batch', 0, 'batch size (0: 4 as the paper for real data, 8 for the built-in set)' },
  { 'lr', 0, 'Adam learning rate (0: 2e-4 as the paper for real data, 5e-4 for the built-in set)' },
  { 'repeats', 0, 'runs with different splits, reported as mean +- std (0: 5 for real data, 1 built-in)' },
  { 'test_fraction', 0.1, 'held-out fraction of each class' },
  { 'device', 'cpu', 'cpu or cuda' },
  { 'autocast', 'none', 'none or bf16: bfloat16 operands for conv2d and NAM (--device cuda; float32 weights)' },
  { 'workers', 2, 'data loader threads' },
  { 'threads', 2, 'compute threads (OpenMP and BLAS)' },
  { 'seed', 1, 'seed of splits, initialisation and augmentation' },
  { 'resume', false, 'continue each run from its last checkpoint' },
  { 'pretrained', '', 'backbone weights (safetensors, torchvision names; tools/convert_torchvision.py)' },
  { 'synthetic_n', 480, 'images in the built-in set' },
  { 'gradcam', 4, 'test images to explain with Grad-CAM per run (0: none)' },
  { 'cache', '', 'cache folder for the built-in set (empty: ~/.cache/fovea)' },
}
