"""What the tests share: tiny params, tiny projects on disk, the test model and data, a
`fit` runner, DVC helpers, and the workers that spawned processes import."""
