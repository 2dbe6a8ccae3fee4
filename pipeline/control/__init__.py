"""Run control: MLflow tracking, threads, the torchrun relaunch, what a stage learns from DVC,
stopping on signals, atomic outputs, and the grid runner."""
