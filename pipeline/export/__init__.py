"""`imas export`: a trained network as ONNX, torch.export or TorchScript, checked against
PyTorch."""
