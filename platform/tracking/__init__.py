"""Where a run's figures go besides its run directory: trackers and the terminal.

Modules: ``trackers`` (the choice of TensorBoard, MLflow or both), ``mlflow_tracker``,
``tensorboard``, ``progress`` (epoch lines and bars in the driver's terminal), ``console`` (what
a command prints, and which of Ray's lines), ``metrics`` (a run's Prometheus series through Ray's
metrics pipeline) and ``ray_views`` (Ray Train's own views, the Grafana dashboard, the dashboard's login).
"""
