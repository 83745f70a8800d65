"""L4 a run is a folder: created and locked (folder, lock), trained into and resumed (train),
lock-step groups of run folders (group), re-evaluated (evaluate), read back (record), its
figures (figures). The one layer that resolves a backend for a run. Never imports
experiments, report or cli."""
