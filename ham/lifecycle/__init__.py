"""The process around a run, apart from the training itself: which rank of how many this process is (world),
stop signals and Ctrl-C (stop), the run directory's lock (runlock), and SLURM preemption/requeue (preempt).
Torch-free: ham.cli uses them before torch is imported; the fit loop asks `stop` whether to stop."""
