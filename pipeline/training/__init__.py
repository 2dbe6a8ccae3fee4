"""What the training stages share: the stage body around `imas.train.fit`, loaders,
checkpoints and the protocol's scoring."""
