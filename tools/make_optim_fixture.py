#!/usr/bin/python3
"""make_optim_fixture.py: writes PyTorch's own optimizer trajectories, gradient clipping
and learning-rate schedules as spec/fixtures/optim/torch_trajectories.json, which
spec/optim_spec.lua compares fovea.optim against.

Needs Debian's PyTorch for the system python: apt-get install -y python3-torch, then
    /usr/bin/python3 tools/make_optim_fixture.py
Everything is deterministic (fixed values, no random numbers), so the file is
reproducible. Layout:
  torch_version
  optimizers: [{name, optimizer (Adam, AdamW or SGD), options (fovea's option names),
                dtype, shapes, init (flat row-major values per parameter),
                steps: [{grads: [flat values, or null for no gradient], params: [after the step]}],
                state: [{step?, exp_avg?, ...} or null, per parameter, after the last step]}]
  clip: [{norm_type (number, or the string "inf"), max_norm, grads, total, clipped}]
  schedules: [{name, scheduler, options, lr, lrs: [lr after creation, after step 1, ...]}]
Gradients for each step are a function of the current parameters (a quadratic's
gradient with a step-dependent pull), computed in the parameters' dtype, and recorded.
"""
import json
import math
import os

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spec", "fixtures", "optim",
                   "torch_trajectories.json")

SHAPES = [[2, 3], [4], [1]]
INIT = [
    [0.5, -1.25, 2.0, 0.0, 3.5, -0.75],
    [1.0, -2.0, 0.25, 4.0],
    [-0.3],
]


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def grad_for(p, k, j):
    """Gradient of parameter j at step k (from 1): 2 * (p - target) plus a pull that
    changes sign and size with the step, so the moments and maxima vary."""
    target = torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape) * 0.5 - 1.0
    pull = math.sin(1.7 * k + j) * (3.0 if k % 3 == 0 else 0.4)
    return (2.0 * (p.detach() - target) + pull).to(p.dtype)


def run_optimizer(name, cls, options, torch_options, dtype, steps=6, skip=None):
    """skip: set of (step, param index) pairs that get no gradient."""
    skip = skip or set()
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    params = [torch.tensor(v, dtype=tdtype).reshape(s).requires_grad_(True) for v, s in zip(INIT, SHAPES)]
    opt = cls(params, foreach=False, **torch_options)
    record = {"name": name, "optimizer": cls.__name__, "options": options, "dtype": dtype, "shapes": SHAPES,
              "init": [flat(p) for p in params], "steps": []}
    for k in range(1, steps + 1):
        grads = []
        for j, p in enumerate(params):
            if (k, j) in skip:
                p.grad = None
                grads.append(None)
            else:
                p.grad = grad_for(p, k, j)
                grads.append(flat(p.grad))
        opt.step()
        record["steps"].append({"grads": grads, "params": [flat(p) for p in params]})
    state = []
    for p in params:
        s = opt.state.get(p)
        if not s:
            state.append(None)
            continue
        entry = {}
        for key, value in s.items():
            if value is None:
                continue
            if key == "step":
                entry["step"] = int(value.item()) if torch.is_tensor(value) else int(value)
            else:
                entry[key] = flat(value)
        state.append(entry)
    record["state"] = state
    return record


def optimizers():
    out = []
    adam = torch.optim.Adam
    adamw = torch.optim.AdamW
    sgd = torch.optim.SGD
    for dtype in ("float64", "float32"):
        out.append(run_optimizer("adam", adam, {"lr": 0.1}, {"lr": 0.1}, dtype))
        out.append(run_optimizer("adam_wd", adam, {"lr": 0.05, "betas": [0.8, 0.9], "eps": 1e-6,
                                                  "weight_decay": 0.1},
                                 {"lr": 0.05, "betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.1}, dtype))
        out.append(run_optimizer("adam_amsgrad", adam, {"lr": 0.1, "weight_decay": 0.05, "amsgrad": True},
                                 {"lr": 0.1, "weight_decay": 0.05, "amsgrad": True}, dtype))
        out.append(run_optimizer("adamw", adamw, {"lr": 0.1}, {"lr": 0.1}, dtype))
        out.append(run_optimizer("adamw_wd_amsgrad", adamw, {"lr": 0.05, "weight_decay": 0.3, "amsgrad": True},
                                 {"lr": 0.05, "weight_decay": 0.3, "amsgrad": True}, dtype))
        out.append(run_optimizer("sgd", sgd, {"lr": 0.1}, {"lr": 0.1}, dtype))
        out.append(run_optimizer("sgd_momentum", sgd, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
                                 {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}, dtype))
        out.append(run_optimizer("sgd_nesterov_wd", sgd,
                                 {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.2, "nesterov": True},
                                 {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.2, "nesterov": True}, dtype))
    # parameters without a gradient at some steps: their state is created late and their
    # step count lags behind the others'
    skip = {(1, 1), (2, 1), (3, 2), (4, 0)}
    out.append(run_optimizer("adam_skip", adam, {"lr": 0.1, "amsgrad": True}, {"lr": 0.1, "amsgrad": True},
                             "float64", skip=skip))
    out.append(run_optimizer("adamw_skip", adamw, {"lr": 0.1}, {"lr": 0.1}, "float64", skip=skip))
    out.append(run_optimizer("sgd_skip", sgd, {"lr": 0.1, "momentum": 0.9}, {"lr": 0.1, "momentum": 0.9},
                             "float64", skip=skip))
    return out


def clips():
    out = []
    grads = [[3.0, -4.0, 0.5, 1.0, -2.0, 0.25], [1.5, 2.5, -0.5, 0.75], [-6.0]]
    for norm_type, max_norm in ((2.0, 1.0), (2.0, 100.0), (float("inf"), 2.0), (1.0, 5.0), (3.0, 0.5)):
        params = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float64).reshape(p.shape)
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        out.append({"norm_type": "inf" if math.isinf(norm_type) else norm_type, "max_norm": max_norm,
                    "grads": grads, "total": float(total), "clipped": [flat(p.grad) for p in params]})
    return out


def schedules():
    out = []
    cases = [
        ("step", torch.optim.lr_scheduler.StepLR, "StepLR", {"step_size": 3, "gamma": 0.5}, 0.1),
        ("step_default_gamma", torch.optim.lr_scheduler.StepLR, "StepLR", {"step_size": 4}, 1.0),
        ("cosine", torch.optim.lr_scheduler.CosineAnnealingLR, "CosineAnnealingLR", {"T_max": 10}, 0.1),
        ("cosine_eta_min", torch.optim.lr_scheduler.CosineAnnealingLR, "CosineAnnealingLR",
         {"T_max": 7, "eta_min": 0.001}, 0.05),
    ]
    for name, cls, cname, options, lr in cases:
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=lr)
        sched = cls(opt, **options)
        lrs = [opt.param_groups[0]["lr"]]
        for _ in range(25):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        out.append({"name": name, "scheduler": cname, "options": options, "lr": lr, "lrs": lrs})
    return out


def main():
    data = {"torch_version": torch.__version__, "optimizers": optimizers(), "clip": clips(),
            "schedules": schedules()}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
