"""L3 training: the configuration (config), the state a run carries (state), the loop (loop) and
its steppers -- op by op (stepper), the fused step (fused), lock-step groups (lockstep) --,
checkpoints (checkpoint) and the signals that stop a run cleanly (signals). Never imports
runs, experiments, report or cli, and never picks a backend: the ops are handed in."""
