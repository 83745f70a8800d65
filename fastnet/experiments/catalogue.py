"""TODO docstring for experiments.catalogue."""
from __future__ import annotations

HIDDEN_2 = (50,)
HIDDEN_3 = (50, 50)
HIDDEN_9 = (50, 30, 20, 20, 10, 10, 10, 10)
N_TRAIN_A3 = 45_000
BATCH = 100
N_S_DEFAULT = 5 * N_TRAIN_A3 // BATCH   # 2250, the assignment's n_s
N_S_SHORT = 2 * N_TRAIN_A3 // BATCH     # 900, "if training is slow on your machine"

#: The Exercise 2 / 3 setting ("the given default parameter setting").
DEFAULT_SETTING = dict(batch=BATCH, eta_min=1e-5, eta_max=1e-1, lam=0.005, cycles=2, n_s=N_S_DEFAULT, init="he", split="a3", n_val=5000)
COARSE_N = 8
FINE_N = 8
SEARCH_SEED = 2424
SEARCH_CYCLES = 2
SEARCH_N_S = N_S_SHORT

INIT_SIGMAS = (1e-1, 1e-3, 1e-4)

QUICK = dict(n_s=4, n_val=300)
QUICK_COARSE_N = 3
QUICK_FINE_N = 2

EXPERIMENTS = ("a2-default", "ex2-3layer", "ex2-9layer", "ex3-3layer-bn", "ex3-9layer-bn", "lambda-search", "final-3cycles", "init-sensitivity")

TITLES = {
    "a2-default": "Assignment 2 default: 2-layer [50], no BN",
    "ex2-3layer": "Exercise 2: 3-layer [50, 50], no BN",
    "ex2-9layer": "Exercise 2: 9-layer [50, 30, 20, 20, 10, 10, 10, 10], no BN",
    "ex3-3layer-bn": "Exercise 3: 3-layer [50, 50], BN",
    "ex3-9layer-bn": "Exercise 3: 9-layer [50, 30, 20, 20, 10, 10, 10, 10], BN",
    "lambda-search": "Exercise 3: coarse-to-fine lambda search, 3-layer BN",
    "final-3cycles": "Exercise 3: best lambda, 3 cycles, 3-layer BN",
    "init-sensitivity": "Exercise 3: sensitivity to initialisation, BN vs no BN",
}

#: What the assignment text quotes for each experiment (for the summary table).
QUOTED = {
    "a2-default": "replicate Assignment 2's default result",
    "ex2-3layer": "~52 %",
    "ex2-9layer": "drops by quite a bit",
    "ex3-3layer-bn": "~53.5 %",
    "ex3-9layer-bn": "\"not bad\": close to the 3-layer BN net",
    "lambda-search": "(validation accuracy per lambda)",
    "final-3cycles": "(not quoted)",
    "init-sensitivity": "BN should be far less sensitive to sigma",
}
