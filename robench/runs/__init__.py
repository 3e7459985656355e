"""Running evaluations: preparation, the plan of a run, the task functions, the local and Ray backends, the driver, runs
and suites."""
