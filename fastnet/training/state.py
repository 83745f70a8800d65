"""What a run carries between steps: its History, its Position in the schedule, the
StopRequest a signal sets and the Interrupted error it stops with."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class History:
    """What a run measured. ``evals``: one row per evaluation; ``steps``: one per update."""

    evals: list[dict] = field(default_factory=list)
    step_eta: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    one_core_steps: int = 0  # two-core steps run on one thread while the second core was busy (fastnet/training/load_guard.py)
    step_form: str = ""  # how the steps were taken (Stepper.form), "" before any

    @property
    def steps(self) -> int:
        return len(self.step_loss)


@dataclass
class Position:
    """Where a run stands in its schedule: with the parameters and history, enough to go on.

    ``t`` update steps are done; ``epoch`` (0-based) is the epoch in progress and ``j`` the
    mini-batches of it already done (``j = 0``: it has not started; ``epoch`` = the number of
    epochs: the schedule is complete). ``rng_state`` is the shuffling generator's
    ``bit_generator.state`` before ``epoch``'s permutation was drawn, so that the permutation
    can be drawn again.
    """

    t: int = 0
    epoch: int = 0
    j: int = 0
    rng_state: dict | None = None


class StopRequest:
    """A flag a signal handler sets; :func:`fit` looks at it between two steps.

    ``signum`` is the signal received (None: none yet). While ``deferring`` is true (fit sets
    it around its loop) a handler only records the signal, so the step in flight finishes and
    the state can be checkpointed; otherwise, or at a second signal, it stops at once.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run. ``exit_code`` is 128 + the signal number (130, 143);
    ``message`` is the line the command line prints; ``step`` the step checkpointed, if any."""

    def __init__(self, signum: int, step: int | None = None, message: str | None = None):
        super().__init__(signum)
        self.signum, self.step = signum, step
        self.exit_code = 128 + int(signum)
        self.message = message or (f"fastnet: interrupted at step {step}" if step is not None else "fastnet: interrupted")

    def __str__(self) -> str:
        return self.message
