"""Dataset acquisition: download, build and check a dataset root, the authors' split lists."""
